"""The whole uint8 image cache held in the training device's memory; a batch is a device-side gather.

223,414 images x 224 x 224 bytes is about 11 GB, which fits an 80 GB GPU beside DenseNet121: the
data path then costs one index copy and one gather per step, with no host reads or transfers.
``BatchLoader`` iterates a ``DeviceImages`` exactly like an ``ImageCache`` (same batches, same order),
so a run gives the same numbers with or without it. On CPU it is an in-memory copy (correct, no faster).
"""

import numpy as np
import torch

from chexutils.data.cache import ImageCache

FREE_MEMORY_SHARE = 0.5  # "fits": the cache takes at most this share of the device's free memory


class DeviceImages:
    """``len(cache)`` uint8 images of shape (1, S, S) in one tensor on ``device``."""

    def __init__(self, cache: ImageCache, device, chunk: int = 4096):
        self.size, self.device = cache.size, torch.device(device)
        n = len(cache)
        self.images = torch.empty((n, 1, cache.size, cache.size), dtype=torch.uint8, device=self.device)
        for start in range(0, n, chunk):  # chunked so host memory stays small while copying
            part = torch.from_numpy(np.array(cache.images[start : start + chunk]))  # a writable copy of the slice
            self.images[start : start + len(part), 0].copy_(part)

    def __len__(self) -> int:
        return len(self.images)

    def gather(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(images on the device, rows on the host) for one batch of frame rows."""
        index = torch.from_numpy(np.asarray(rows, dtype=np.int64))
        return self.images.index_select(0, index.to(self.device, non_blocking=True)), index


def fits_on_device(cache: ImageCache, device) -> bool:
    """True on CUDA when the cache's bytes are at most ``FREE_MEMORY_SHARE`` of the free device memory."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return False
    free, _ = torch.cuda.mem_get_info(device)
    return cache.images.nbytes <= FREE_MEMORY_SHARE * free


def maybe_on_device(images, device, wanted: bool | None):
    """``images`` moved to ``device`` when ``wanted`` (None: when it is a cache that fits), else unchanged."""
    if not isinstance(images, ImageCache) or wanted is False:
        return images
    if wanted is None and not fits_on_device(images, device):
        return images
    return DeviceImages(images, device)
