"""Batches of uint8 images for training and evaluation, from the cache (default) or from the JPEGs.

Both sources yield ``(images, rows)``: a ``(B, 1, S, S)`` uint8 tensor and the frame rows it
holds, so targets are looked up by row (never by position in a batch). Conversion to float and
ImageNet normalisation happen later, on the training device, inside the model.
"""

import queue
import threading

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from chexutils.core.errors import DataError
from chexutils.data.cache import ImageCache, load_resized, open_cache


def image_source(
    frame, size: int, method: str, use_cache: bool, cache_dir, check: str = "stat", geometry: str = "square"
):
    """Where a frame's resized images come from: the uint8 cache (built or reused) or the JPEGs per item."""
    if use_cache:
        return open_cache(frame, size, cache_dir, method, check=check, geometry=geometry)
    return ResizedImages(frame["image"], size, method, frame.get("line"), geometry)


def epoch_batches(
    n: int,
    batch_size: int,
    shuffle: bool,
    seed: int,
    epoch: int,
    rank: int = 0,
    world: int = 1,
    drop_last: bool = False,
) -> list[np.ndarray]:
    """This rank's row batches for one epoch; torch's DistributedSampler decides order and sharding.

    A last batch of one row joins the batch before it: BatchNorm cannot train on a single image
    (at small sizes its features are 1 x 1), and dropping it would leave an image untrained."""
    sampler = DistributedSampler(
        range(n), num_replicas=world, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last and world > 1
    )
    sampler.set_epoch(epoch)
    rows = np.fromiter(iter(sampler), dtype=np.int64)
    batches = [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]
    if drop_last and batches and len(batches[-1]) < batch_size:
        batches.pop()
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches[-2:] = [np.concatenate(batches[-2:])]
    return batches


class ResizedImages(Dataset):
    """Per-image reads from the JPEGs (the path without a cache): decode, resize, uint8 (1, S, S)."""

    def __init__(self, image_paths, size: int, method: str = "bilinear", lines=None, geometry: str = "square"):
        self.paths, self.size, self.method, self.geometry = list(image_paths), size, method, geometry
        self.lines = None if lines is None else list(lines)  # CSV line per row, for error messages

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, row: int):
        try:
            return torch.from_numpy(load_resized(self.paths[row], self.size, self.method, self.geometry))[None], row
        except DataError as err:
            if self.lines is None:
                raise
            raise DataError(f"{err} (CSV line {int(self.lines[row])})") from None


class _CachedBatch(Dataset):
    """Item i = whole batch i read from the cache's memory map (opened lazily in each worker)."""

    def __init__(self, cache: ImageCache, batches: list[np.ndarray]):
        self.folder, self.size, self.method, self.batches = cache.folder, cache.size, cache.method, batches
        self.geometry = cache.geometry
        self._cache = cache

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int):
        rows = self.batches[i]
        return torch.from_numpy(self._cache.read(rows)), torch.from_numpy(rows)

    def __getstate__(self):  # never pickle the memory map's pages into a worker
        state = dict(self.__dict__)
        state["_cache"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._cache = ImageCache(
            self.folder, np.load(self.folder / "images.npy", mmap_mode="r"), self.size, self.method, self.geometry
        )


class BatchLoader:
    """Iterate one epoch of ``(images, rows)`` batches; call ``set_epoch`` between epochs to reshuffle.

    ``subset``: only these rows of ``source`` (e.g. a recipe stage's studies), batched and shuffled as if
    they were the whole source; the rows yielded are still rows of ``source``."""

    def __init__(
        self,
        source,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        workers: int = 0,
        pin_memory: bool = False,
        drop_last: bool = False,
        rank: int = 0,
        world: int = 1,
        subset=None,
    ):
        self.subset = None if subset is None else np.asarray(subset, dtype=np.int64)
        self.source, self.batch_size, self.shuffle, self.seed = source, batch_size, shuffle, seed
        self.workers, self.pin_memory, self.drop_last, self.rank, self.world = (
            workers,
            pin_memory,
            drop_last,
            rank,
            world,
        )
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[np.ndarray]:
        batches = epoch_batches(
            len(self.source) if self.subset is None else len(self.subset),
            self.batch_size,
            self.shuffle,
            self.seed,
            self.epoch,
            self.rank,
            self.world,
            self.drop_last,
        )
        return batches if self.subset is None else [self.subset[b] for b in batches]

    def __len__(self) -> int:
        return len(self.batches())

    def __iter__(self):
        batches = self.batches()
        if hasattr(self.source, "gather"):  # a cache held in device memory (chexutils.data.device_cache)
            yield from (self.source.gather(rows) for rows in batches)
            return
        if isinstance(self.source, ImageCache):
            if self.workers == 0:
                yield from _prefetch(self._read_cached(rows) for rows in batches)
                return
            loader = DataLoader(
                _CachedBatch(self.source, batches),
                batch_size=None,
                num_workers=self.workers,
                pin_memory=self.pin_memory,
            )
        else:
            loader = DataLoader(
                self.source,
                batch_sampler=[b.tolist() for b in batches],
                num_workers=self.workers,
                pin_memory=self.pin_memory,
            )
        yield from loader

    def _read_cached(self, rows: np.ndarray):
        images = torch.from_numpy(self.source.read(rows))
        return (images.pin_memory() if self.pin_memory else images), torch.from_numpy(rows)


def _prefetch(iterator, depth: int = 2):
    """Run ``iterator`` up to ``depth`` items ahead in a background thread (overlaps reads with compute)."""
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def fill():
        try:
            for item in iterator:
                while not stop.is_set():
                    try:
                        buffer.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
        except BaseException as err:  # handed to the consumer, which re-raises it
            buffer.put(err)
        buffer.put(done)

    worker = threading.Thread(target=fill, daemon=True)
    worker.start()
    try:
        while (item := buffer.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:  # the consumer stopped early or finished: let the thread end
        stop.set()
        worker.join(timeout=1)
