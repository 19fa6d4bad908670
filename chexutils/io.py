"""Small atomic writers (temp file + rename), so an interrupted step never leaves a half-written file."""

import json
import os
from pathlib import Path

import pandas as pd


def write_json(path, payload) -> Path:
    """Write ``payload`` as indented JSON, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # per process: two writers never share one
    tmp.write_text(json.dumps(payload, indent=2, default=_plain))
    os.replace(tmp, path)
    return path


def write_table(frame: pd.DataFrame, path, index: bool = True, **to_csv) -> Path:
    """Write a table as CSV, atomically (extra keywords go to ``DataFrame.to_csv``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # per process: two writers never share one
    frame.to_csv(tmp, index=index, **to_csv)
    os.replace(tmp, path)
    return path


def _plain(value):
    """numpy scalars and paths as plain JSON values."""
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
