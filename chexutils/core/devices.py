"""Where a model runs and in what precision: one place that picks the device and the autocast."""

import torch


def cuda_available() -> bool:
    """Whether this machine has a CUDA device (what ``device: auto`` picks)."""
    return torch.cuda.is_available()


def pick_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """``"auto"``: this process's CUDA device when there is one, else the CPU; otherwise as named."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device(name)


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on CUDA when ``enabled``; a no-op context elsewhere (CPU runs stay float32)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled and device.type == "cuda")
