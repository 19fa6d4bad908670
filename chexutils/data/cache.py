"""Pre-resized uint8 image cache: decode and resize every image once, then read whole batches.

One cache per (image list, size, resize method, geometry, files' state), under ``<cache_root>/<key>-<stamp>/``:
``images.npy`` (N x S x S uint8, memory-mapped, one channel), ``index.csv`` (Path per row),
``stamps.npy`` (each file's size and mtime, or size and content hash, when it was read),
``filled.npy`` (rows already written, so an interrupted build resumes) and ``meta.json``
(written last: its presence means complete). Anything changed, an image rewritten at the same
path included, gives a new folder, so a stale cache is never read; rows whose file is unchanged
are copied from an older cache of the same list instead of being decoded again. One process
builds a cache (an OS lock on ``<folder>/.lock``); others wanting it wait, then read it.
"""

import ctypes
import errno
import functools
import hashlib
import os
import shutil
import signal
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from chexutils.core import locks
from chexutils.core.errors import DataError
from chexutils.core.io import DISK_FULL, atomic_path, write_json
from chexutils.data.chexpert import read_image

CACHE_VERSION = 2
MARKER = ".chexutils-cache"  # written first into every cache folder: housekeeping removes only folders carrying it
CHECKS = ("stat", "content")  # what tells a changed image: size + mtime (fast) or size + content hash (reads all)
RESIZE_METHODS = {
    "bilinear": Image.Resampling.BILINEAR,
    "area": Image.Resampling.BOX,
    "bicubic": Image.Resampling.BICUBIC,
}
CHUNK = 256  # rows per work unit; progress is saved after each
# How a (H, W) film becomes (size, size), the three the original study (Irvin et al. 2019) found to perform alike:
# "square" stretches it (today's default), "pad" keeps the aspect ratio (longer side = size) and fills the
# rest with zeros (black) around the centred image, "crop" keeps the aspect ratio (shorter side = size) and
# keeps the centre square.
GEOMETRIES = ("square", "pad", "crop")


def resize_image(pixels: np.ndarray, size: int, method: str = "bilinear", geometry: str = "square") -> np.ndarray:
    """An (H, W) uint8 image as (size, size) uint8 by ``geometry`` (GEOMETRIES), resized with PIL's ``method``."""
    if geometry not in GEOMETRIES:
        raise ValueError(f"unknown geometry {geometry!r}; known: {', '.join(GEOMETRIES)}")
    image = Image.fromarray(pixels, mode="L")
    if geometry == "square":
        return np.array(image.resize((size, size), RESIZE_METHODS[method]), dtype=np.uint8)
    height, width = pixels.shape
    scale = size / (max(height, width) if geometry == "pad" else min(height, width))
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    scaled = np.array(image.resize((new_w, new_h), RESIZE_METHODS[method]), dtype=np.uint8)
    if geometry == "crop":
        top, left = (new_h - size) // 2, (new_w - size) // 2
        return np.ascontiguousarray(scaled[top : top + size, left : left + size])
    out = np.zeros((size, size), np.uint8)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    out[top : top + new_h, left : left + new_w] = scaled
    return out


def load_resized(path, size: int, method: str = "bilinear", geometry: str = "square") -> np.ndarray:
    """Read one image and resize it: exactly what the cache stores for it."""
    return resize_image(read_image(path), size, method, geometry)


def cache_key(image_paths, size: int, method: str, geometry: str = "square") -> str:
    """Hash of the image list, the size, the resize method and the geometry (square: as before geometries
    existed, so the caches already built keep their key; another geometry never shares a key with it)."""
    shape = "" if geometry == "square" else f"geometry={geometry}|"
    digest = hashlib.sha256(f"v{CACHE_VERSION}|{size}|{method}|{shape}".encode())
    for p in image_paths:
        digest.update(str(p).encode() + b"\n")
    return digest.hexdigest()[:16]


def file_stamps(image_paths, check: str = "stat") -> np.ndarray:
    """(N, 2) int64 per file: size and mtime (ns), or size and a content hash; (-1, -1) for a missing file."""
    if check not in CHECKS:
        raise DataError(f"unknown cache check {check!r}; known: {', '.join(CHECKS)}")
    stamps = np.full((len(image_paths), 2), -1, np.int64)
    for i, p in enumerate(image_paths):
        try:
            if check == "stat":
                st = os.stat(p)
                stamps[i] = (st.st_size, st.st_mtime_ns)
            else:
                data = open(p, "rb").read()
                stamps[i] = (
                    len(data),
                    int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little", signed=True),
                )
        except OSError:
            pass
    return stamps


def cache_folder(cache_root, image_paths, size: int, method: str, stamps: np.ndarray, geometry: str = "square") -> Path:
    """``<cache_root>/<list key>-<stamp key>``: one folder per image list (size, method, geometry) and state of its files."""
    stamp_key = hashlib.sha256(np.ascontiguousarray(stamps).tobytes()).hexdigest()[:8]
    return Path(cache_root) / f"{cache_key(image_paths, size, method, geometry)}-{stamp_key}"


@dataclass
class ImageCache:
    """A complete cache: ``images[i]`` is row i of the frame it was built from, resized to ``size``."""

    folder: Path
    images: np.ndarray  # memory map, (N, size, size) uint8
    size: int
    method: str
    geometry: str = "square"

    def __len__(self) -> int:
        return len(self.images)

    def read(self, rows) -> np.ndarray:
        """Rows as an (B, 1, S, S) uint8 array, read in sorted order (sequential on disk), returned in ``rows`` order."""
        rows = np.asarray(rows)
        order = np.argsort(rows, kind="stable")
        out = np.empty((len(rows), 1, self.size, self.size), np.uint8)
        out[order, 0] = self.images[rows[order]]
        return out


def open_cache(
    frame: pd.DataFrame,
    size: int,
    cache_root,
    method: str = "bilinear",
    workers: int | None = None,
    check: str = "stat",
    geometry: str = "square",
) -> ImageCache:
    """The cache for ``frame["image"]`` at ``size``: reused when complete, otherwise built (or resumed).

    ``check`` says how a changed image is noticed ("stat": size and mtime; "content": a hash of
    every file, slower). While another process builds the same cache, this one waits for it."""
    if method not in RESIZE_METHODS:
        raise ValueError(f"unknown resize method {method!r}; known: {', '.join(RESIZE_METHODS)}")
    paths = frame["image"].astype(str).tolist()
    stamps = file_stamps(paths, check)
    folder = cache_folder(cache_root, paths, size, method, stamps, geometry)
    if not (folder / "meta.json").is_file():
        with locks.exclusive(
            folder / ".lock", f"image cache {folder}", wait=True, on_wait=functools.partial(_say_waiting, folder)
        ):
            if not (folder / "meta.json").is_file():  # the other builder may have finished it meanwhile
                _build(
                    folder,
                    paths,
                    size,
                    (method, geometry),
                    workers or os.cpu_count() or 1,
                    frame.get("line"),
                    stamps,
                    check,
                )
    return ImageCache(folder, _open_images(folder, len(paths), size), size, method, geometry)


def _say_waiting(folder: Path, who: str) -> None:
    print(f"waiting for image cache {folder}: being built by {who}", flush=True)


def _open_images(folder: Path, count: int, size: int) -> np.ndarray:
    """images.npy of a complete cache, memory-mapped; a damaged file is a DataError saying what to do."""
    store = folder / "images.npy"
    try:
        images = np.load(store, mmap_mode="r")
    except (OSError, ValueError, EOFError) as err:
        raise DataError(
            f"{store}: damaged image cache ({err}); expected {count} x {size} x {size} uint8 images. "
            f"Delete the folder {folder} (python -m chexutils cache_admin clean --all) to rebuild it"
        ) from None
    if images.shape != (count, size, size) or images.dtype != np.uint8:
        raise DataError(
            f"{store}: holds {images.shape} {images.dtype}, expected ({count}, {size}, {size}) uint8; "
            f"delete the folder {folder} to rebuild it"
        )
    return images


def _build(
    folder: Path, paths: list[str], size: int, how: tuple, workers: int, lines, stamps: np.ndarray, check: str
) -> None:
    """Fill images.npy chunk by chunk; ``filled.npy`` records finished rows after each chunk is flushed.
    ``how``: (resize method, geometry)."""
    method, geometry = how
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MARKER).write_text(f"image cache version {CACHE_VERSION}, made by chexutils\n")
    store, filled_path = folder / "images.npy", folder / "filled.npy"
    if store.is_file() and filled_path.is_file():
        _reserve(store, folder)
        images = np.load(store, mmap_mode="r+")
        filled = np.load(filled_path)
    else:
        try:
            np.lib.format.open_memmap(store, mode="w+", dtype=np.uint8, shape=(len(paths), size, size)).flush()
        except OSError as err:
            raise _no_space(err, store, folder, len(paths) * size * size) from None
        _reserve(store, folder)  # every block allocated before anything is written through the map
        images = np.load(store, mmap_mode="r+")
        filled = _salvage(folder, images, stamps)
        np.save(folder / "stamps.npy", stamps)
        _save_filled(filled, filled_path)
    pd.DataFrame({"image": paths}).to_csv(folder / "index.csv", index_label="row")
    todo = [np.arange(s, min(s + CHUNK, len(paths))) for s in range(0, len(paths), CHUNK)]
    todo = [rows[~filled[rows]] for rows in todo if not filled[rows].all()]  # only the rows still missing
    bar = tqdm(total=len(paths), initial=int(filled.sum()), desc=f"image cache {size}px", unit="img", mininterval=1)
    jobs = [(str(store), rows, [paths[i] for i in rows], size, method, geometry) for rows in todo]
    try:
        if workers == 1 or len(jobs) <= 1:
            results = map(_fill_chunk, jobs)
            for rows in results:
                filled = _mark(filled, rows, filled_path, bar)
        else:
            with ProcessPoolExecutor(workers, initializer=_die_with_parent) as pool:
                for rows in pool.map(_fill_chunk, jobs):
                    filled = _mark(filled, rows, filled_path, bar)
    except DataError as err:
        raise _with_line(err, paths, lines) from None
    finally:
        bar.close()
    del images
    write_json(
        folder / "meta.json",
        {
            "version": CACHE_VERSION,
            "size": size,
            "method": method,
            "geometry": geometry,
            "count": len(paths),
            "check": check,
        },
    )
    filled_path.unlink(missing_ok=True)


def _reserve(store: Path, folder: Path) -> None:
    """Allocate every block of ``store`` now: a memory map over a sparse file meets a full disk as SIGBUS
    (the process dies without a word) while writing; reserved up front, a full disk is one DataError here
    naming the folder and the space needed, and the half-made file is removed."""
    if not hasattr(os, "posix_fallocate"):  # not on macOS: the map is written as before
        return
    size = 0
    try:
        with open(store, "r+b") as handle:
            size = os.fstat(handle.fileno()).st_size
            os.posix_fallocate(handle.fileno(), 0, size)
    except OSError as err:
        if err.errno in (errno.EOPNOTSUPP, errno.EINVAL):  # a file system without fallocate
            return
        raise _no_space(err, store, folder, size) from None


def _no_space(err: OSError, store: Path, folder: Path, size: int) -> Exception:
    """A full disk while making ``store``: the half-made file removed, one DataError with the space needed."""
    if err.errno not in DISK_FULL:
        return err
    store.unlink(missing_ok=True)
    (folder / "filled.npy").unlink(missing_ok=True)
    try:
        free = f"{shutil.disk_usage(folder).free / 2**20:.1f} MiB free"
    except OSError:
        free = "free space unknown"
    return DataError(
        f"{folder}: no space left on the device for the image cache ({err.strerror}): {store.name} needs "
        f"{size / 2**20:.1f} MiB, {free}; free some space or set cache_dir to a folder on a larger disk"
    )


def _fill_chunk(job) -> np.ndarray:
    """Worker: decode, resize and write one chunk of rows straight into the memory map."""
    store, rows, chunk_paths, size, method, geometry = job
    images = np.load(store, mmap_mode="r+")
    for row, path in zip(rows, chunk_paths):
        images[row] = load_resized(path, size, method, geometry)
    images.flush()
    return rows


def _mark(filled: np.ndarray, rows: np.ndarray, filled_path: Path, bar) -> np.ndarray:
    filled[rows] = True
    _save_filled(filled, filled_path)
    bar.update(len(rows))
    return filled


def _save_filled(filled: np.ndarray, filled_path: Path) -> None:
    with atomic_path(filled_path) as tmp, open(tmp, "wb") as handle:  # a temp file per process
        np.save(handle, filled)


def _salvage(folder: Path, images: np.ndarray, stamps: np.ndarray) -> np.ndarray:
    """Copy rows whose file is unchanged from older caches of the same list (not being built); returns filled."""
    filled = np.zeros(len(stamps), bool)
    base = folder.name.rsplit("-", 1)[0]
    for other in sorted(folder.parent.glob(f"{base}-*")):
        if other == folder or not (other / "stamps.npy").is_file() or locks.is_locked(other / ".lock"):
            continue
        try:
            done = np.ones(len(stamps), bool) if (other / "meta.json").is_file() else np.load(other / "filled.npy")
            old_stamps = np.load(other / "stamps.npy")
            old = np.load(other / "images.npy", mmap_mode="r")
        except (OSError, ValueError, EOFError):
            continue  # a damaged leftover: nothing to take from it
        if old.shape != images.shape or old_stamps.shape != stamps.shape or done.shape != filled.shape:
            continue
        rows = np.flatnonzero(done & ~filled & (old_stamps == stamps).all(axis=1) & (stamps >= 0).all(axis=1))
        images[rows] = old[rows]
        filled[rows] = True
    images.flush()
    return filled


def _die_with_parent() -> None:
    """Pool worker set-up: the kernel kills this worker when the building process dies (even by kill -9)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG (Linux only)
    except (OSError, AttributeError):
        pass


def _with_line(err: DataError, paths: list[str], lines) -> DataError:
    """Add the CSV line of the failing image to a worker's error, when the frame carries lines."""
    text = str(err)
    if lines is None:
        return err
    for i, p in enumerate(paths):
        if text.startswith(p):
            return DataError(f"{text} (CSV line {int(lines.iloc[i])})")
    return err
