"""Where a model runs and in what precision: one place that picks the device and the autocast."""

import re

import torch

from chexutils.core.errors import DataError

DEVICE_PATTERN = r"auto|cpu|mps|cuda(:\d+)?"  # the device names a config or a command line may give


def cuda_available() -> bool:
    """Whether this machine has a CUDA device (what ``device: auto`` picks)."""
    return torch.cuda.is_available()


def pick_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """``"auto"``: this process's CUDA device when there is one, else the CPU; otherwise as named.

    A device this machine lacks (``cuda`` without a GPU, ``cuda:3`` with two) is a DataError, not a
    traceback from deep inside torch."""
    if not isinstance(name, str) or not re.fullmatch(DEVICE_PATTERN, name):
        raise DataError(f"device {name!r}: expected auto, cpu, cuda, cuda:N or mps")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        index = local_rank if name == "cuda" else int(name.partition(":")[2] or 0)
        if not torch.cuda.is_available() or index >= torch.cuda.device_count():
            found = f"{torch.cuda.device_count()} CUDA GPU(s)" if torch.cuda.is_available() else "no CUDA GPU"
            raise DataError(f"device {name!r} asked for, but this machine has {found}; use device auto or cpu")
    if name == "mps" and not torch.backends.mps.is_available():
        raise DataError("device 'mps' asked for, but this machine has no Apple GPU (MPS); use device auto or cpu")
    if name == "cuda":
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device(name)


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on CUDA when ``enabled``; a no-op context elsewhere (CPU runs stay float32)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled and device.type == "cuda")
