"""Checkpoints as plain dicts of tensors and primitive values, written atomically, loaded safely."""

import os
import pickle
from pathlib import Path

import torch


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be loaded safely (needs pickled objects, or is corrupt)."""


def save_checkpoint(state: dict, path) -> Path:
    """torch.save to a temp file, then rename: a crash never leaves a half-written checkpoint."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # per process: two writers never share one
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path, map_location="cpu") -> dict:
    """Load with ``weights_only=True``; a checkpoint that needs arbitrary pickled objects is refused."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(f"{path}: refused — it needs pickled Python objects that weights_only=True "
                              f"loading does not allow ({str(err).splitlines()[0]}); expected a plain dict of "
                              "tensors and primitive values as written by chexutils.train") from None
    except (RuntimeError, EOFError) as err:
        raise CheckpointError(f"{path}: not a readable checkpoint ({str(err).splitlines()[0]})") from None
