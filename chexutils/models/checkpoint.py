"""Checkpoints as plain dicts of tensors and primitive values, written atomically, loaded safely."""

import pickle
import zipfile
from pathlib import Path

import torch

from chexutils.core.io import atomic_path


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be loaded safely (needs pickled objects, or is corrupt)."""


def save_checkpoint(state: dict, path) -> Path:
    """torch.save to a temp file, then rename: a crash never leaves a half-written checkpoint.

    Written through a Python file, so a full disk is an OSError (torch's own file writer would raise
    a RuntimeError without the reason) and ``atomic_path`` makes it one DataError naming the folder."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        torch.save(state, handle)
    return Path(path)


EXPECTED = "expected a checkpoint (a plain dict of tensors and primitive values) written by chexutils.training.train"


def load_checkpoint(path, map_location="cpu", require=()) -> dict:
    """Load with ``weights_only=True``; anything else than a dict holding the ``require`` keys is one
    CheckpointError saying what is wrong (empty, not a torch file, truncated, needs pickled objects)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file does not exist; {EXPECTED}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file (0 bytes), e.g. an interrupted copy; {EXPECTED}")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"{path}: not a complete torch checkpoint (no zip archive inside: truncated, or another "
            f"kind of file); {EXPECTED}"
        )
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        detail = next((line.strip() for line in str(err).splitlines() if "Unsupported global" in line), "")
        raise CheckpointError(
            f"{path}: refused — it holds pickled Python objects that weights_only=True loading "
            f"does not allow{' (' + detail + ')' if detail else ''}; {EXPECTED}"
        ) from None
    except (RuntimeError, EOFError, ValueError, OSError) as err:
        first = (str(err).splitlines() or [type(err).__name__])[0].split(". ")[0]
        raise CheckpointError(f"{path}: damaged or truncated checkpoint ({first}); {EXPECTED}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: holds a {type(state).__name__}, not a dict; {EXPECTED}")
    missing = [key for key in require if key not in state]
    if missing:
        raise CheckpointError(
            f"{path}: missing key(s) {', '.join(missing)}; {EXPECTED} (with keys {', '.join(require)})"
        )
    return state
