"""Atomic writers (a per-process temp file, then rename), so an interrupted step never leaves a
half-written file and two processes never write into the same temp file; JSON without NaN."""

import errno
import json
import math
import os
import shutil
import signal
import threading
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from chexutils.core.errors import DataError


@contextmanager
def atomic_path(path):
    """Yield a temp path beside ``path`` (unique to this process); on success it replaces ``path``.

    On an exception the temp file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        os.replace(tmp, path)
    except OSError as err:
        raise write_error(err, path.parent, path.name) from None
    finally:
        tmp.unlink(missing_ok=True)


DISK_FULL = {errno.ENOSPC, errno.EDQUOT}  # no space left on the device, disk quota exceeded
READ_ONLY = {errno.EACCES, errno.EPERM, errno.EROFS}


def write_error(err: OSError, folder, what: str) -> Exception:
    """A full disk or a folder this process may not write, as one DataError naming ``folder``; other
    OSErrors unchanged (``raise write_error(err, ...) from None``)."""
    if err.errno in DISK_FULL:
        try:
            free = f"{shutil.disk_usage(folder).free / 2**20:.0f} MiB free"
        except OSError:
            free = "free space unknown"
        return DataError(
            f"{folder}: no space left on the device while writing {what} ({err.strerror}; {free}); "
            "nothing half-written was kept — free some space or write elsewhere, then run again"
        )
    if err.errno in READ_ONLY:
        return DataError(
            f"{folder}: cannot write {what} here ({err.strerror}); expected a folder this user may write "
            "— change its permissions or write elsewhere"
        )
    return err


class Terminated(KeyboardInterrupt):
    """The process was asked to stop (SIGTERM): raised where it was, so ``finally`` blocks run (temp files
    removed, locks released). A KeyboardInterrupt, so ``except Exception`` never swallows it."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum
        self.name = signal.Signals(signum).name


@contextmanager
def terminate_cleanly(signals=(signal.SIGTERM,), first=None):
    """For a command line's ``main``: ``signals`` raise Terminated instead of ending the process at once.

    Python's default for SIGTERM ends the process without running ``finally`` blocks, which leaves
    ``<name>.<pid>.tmp`` files of ``atomic_path`` behind. ``first()``, when given, runs in the handler
    before the exception unwinds anything (the workbook runner ends its kernels there, before the
    kernel client's own clean-up can talk to them). Outside the main thread (where handlers cannot be
    set) nothing changes; the previous handlers are restored on exit."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if first is not None:
            first()
        raise Terminated(signum)

    previous = {sig: signal.signal(sig, handler) for sig in signals}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a mapping key given twice (plain PyYAML keeps the last one silently,
    so ``lr: 1e-4`` ... ``lr: 1e-2`` would train with the second). Keys brought in by a ``<<:`` merge may
    still be overridden, as YAML intends."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            first = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    hash(key)
                except TypeError:  # an unhashable key: SafeLoader's own error follows
                    continue
                if key in first:
                    raise DuplicateKey(
                        None, None, f"key {key!r} appears twice (first on line {first[key] + 1})", key_node.start_mark
                    )
                first[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


class DuplicateKey(yaml.constructor.ConstructorError):
    """A mapping key given twice (UniqueKeyLoader)."""


def parse_yaml(text: str, where: str):
    """YAML text read with UniqueKeyLoader; a syntax error or a repeated key is one DataError line naming
    ``where`` and the line."""
    try:
        return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        if isinstance(err, DuplicateKey):
            raise DataError(f"{where}{line}: {problem}; expected each key once") from None
        raise DataError(f"{where}{line}: not valid YAML ({problem})") from None


def read_yaml(path, what: str = "config"):
    """A YAML file read with ``parse_yaml``; a missing or unreadable file is a DataError too."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read the {what} ({err})") from None
    return parse_yaml(text, str(path))


def json_ready(value):
    """Plain JSON values: numpy scalars as Python numbers, paths as strings, NaN/inf as None (null)."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and np.ndim(value) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path, payload) -> Path:
    """Write ``payload`` as indented JSON (NaN as null), atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(json_ready(payload), indent=2, allow_nan=False))
    return Path(path)


def write_table(frame: pd.DataFrame, path, index: bool = True, **to_csv) -> Path:
    """Write a table as CSV, atomically (extra keywords go to ``DataFrame.to_csv``)."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=index, **to_csv)
    return Path(path)


def save_figure(fig, path) -> Path | None:
    """Save ``fig`` as PNG under ``path`` (folders created); None leaves it unsaved."""
    if path is None:
        return None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path
