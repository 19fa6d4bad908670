"""Pre-resized uint8 image cache: decode and resize every image once, then read whole batches.

One cache per (image list, size, resize method), under ``<cache_root>/<key>/``:
``images.npy`` (N x S x S uint8, memory-mapped, one channel), ``index.csv`` (Path per row),
``filled.npy`` (rows already written, so an interrupted build resumes) and ``meta.json``
(written last: its presence means complete). Anything changed gives a new key, so a stale
cache is never read.
"""

import hashlib
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from .data import read_image
from .errors import DataError
from .io import atomic_path, write_json

CACHE_VERSION = 1
RESIZE_METHODS = {"bilinear": Image.Resampling.BILINEAR, "area": Image.Resampling.BOX, "bicubic": Image.Resampling.BICUBIC}
CHUNK = 256  # rows per work unit; progress is saved after each


def resize_image(pixels: np.ndarray, size: int, method: str = "bilinear") -> np.ndarray:
    """Resize an (H, W) uint8 image to (size, size) — the original study's square resize — with PIL."""
    return np.array(Image.fromarray(pixels, mode="L").resize((size, size), RESIZE_METHODS[method]), dtype=np.uint8)


def load_resized(path, size: int, method: str = "bilinear") -> np.ndarray:
    """Read one image and resize it: exactly what the cache stores for it."""
    return resize_image(read_image(path), size, method)


def cache_key(image_paths, size: int, method: str) -> str:
    """Hash of the image list, the size and the resize method."""
    digest = hashlib.sha256(f"v{CACHE_VERSION}|{size}|{method}|".encode())
    for p in image_paths:
        digest.update(str(p).encode() + b"\n")
    return digest.hexdigest()[:16]


@dataclass
class ImageCache:
    """A complete cache: ``images[i]`` is row i of the frame it was built from, resized to ``size``."""
    folder: Path
    images: np.ndarray  # memory map, (N, size, size) uint8
    size: int
    method: str

    def __len__(self) -> int:
        return len(self.images)

    def read(self, rows) -> np.ndarray:
        """Rows as an (B, 1, S, S) uint8 array, read in sorted order (sequential on disk), returned in ``rows`` order."""
        rows = np.asarray(rows)
        order = np.argsort(rows, kind="stable")
        out = np.empty((len(rows), 1, self.size, self.size), np.uint8)
        out[order, 0] = self.images[rows[order]]
        return out


def open_cache(frame: pd.DataFrame, size: int, cache_root, method: str = "bilinear",
               workers: int | None = None) -> ImageCache:
    """The cache for ``frame["image"]`` at ``size``: reused when complete, otherwise built (or resumed)."""
    if method not in RESIZE_METHODS:
        raise ValueError(f"unknown resize method {method!r}; known: {', '.join(RESIZE_METHODS)}")
    paths = frame["image"].astype(str).tolist()
    folder = Path(cache_root) / cache_key(paths, size, method)
    if not (folder / "meta.json").is_file():
        _build(folder, paths, size, method, workers or os.cpu_count() or 1, frame.get("line"))
    images = np.load(folder / "images.npy", mmap_mode="r")
    return ImageCache(folder, images, size, method)


def _build(folder: Path, paths: list[str], size: int, method: str, workers: int, lines) -> None:
    """Fill images.npy chunk by chunk; ``filled.npy`` records finished rows after each chunk is flushed."""
    folder.mkdir(parents=True, exist_ok=True)
    store, filled_path = folder / "images.npy", folder / "filled.npy"
    if store.is_file() and filled_path.is_file():
        images = np.load(store, mmap_mode="r+")
        filled = np.load(filled_path)
    else:
        images = np.lib.format.open_memmap(store, mode="w+", dtype=np.uint8, shape=(len(paths), size, size))
        filled = np.zeros(len(paths), bool)
    pd.DataFrame({"image": paths}).to_csv(folder / "index.csv", index_label="row")
    todo = [np.arange(s, min(s + CHUNK, len(paths))) for s in range(0, len(paths), CHUNK)]
    todo = [rows for rows in todo if not filled[rows].all()]
    bar = tqdm(total=len(paths), initial=int(filled.sum()), desc=f"image cache {size}px", unit="img", mininterval=1)
    jobs = [(str(store), rows, [paths[i] for i in rows], size, method) for rows in todo]
    try:
        if workers == 1 or len(jobs) <= 1:
            results = map(_fill_chunk, jobs)
            for rows in results:
                filled = _mark(filled, rows, filled_path, bar)
        else:
            with ProcessPoolExecutor(workers) as pool:
                for rows in pool.map(_fill_chunk, jobs):
                    filled = _mark(filled, rows, filled_path, bar)
    except DataError as err:
        raise _with_line(err, paths, lines) from None
    finally:
        bar.close()
    del images
    write_json(folder / "meta.json", {"version": CACHE_VERSION, "size": size, "method": method, "count": len(paths)})
    filled_path.unlink(missing_ok=True)


def _fill_chunk(job) -> np.ndarray:
    """Worker: decode, resize and write one chunk of rows straight into the memory map."""
    store, rows, chunk_paths, size, method = job
    images = np.load(store, mmap_mode="r+")
    for row, path in zip(rows, chunk_paths):
        images[row] = load_resized(path, size, method)
    images.flush()
    return rows


def _mark(filled: np.ndarray, rows: np.ndarray, filled_path: Path, bar) -> np.ndarray:
    filled[rows] = True
    with atomic_path(filled_path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, filled)
    bar.update(len(rows))
    return filled


def _with_line(err: DataError, paths: list[str], lines) -> DataError:
    """Add the CSV line of the failing image to a worker's error, when the frame carries lines."""
    text = str(err)
    if lines is None:
        return err
    for i, p in enumerate(paths):
        if text.startswith(p):
            return DataError(f"{text} (CSV line {int(lines.iloc[i])})")
    return err
