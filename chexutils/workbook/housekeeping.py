"""Remove what the workbook wrote under ``output/``, and only that.

    python -m chexutils housekeeping clean-output [--dry-run]      # `make clean-output`

A folder is removed only when it carries the footprint its creator wrote: a sweep folder
(``.done/``, written by the runner) or a run folder (``config.json`` beside its ``.lock``). Its
locks are taken first (the sweep's and every run's inside, without waiting); a folder some process
is writing is kept and named. Links, loose files and anything else are kept and named.
``output/README.md`` is the project's and always stays.
"""

import contextlib
import shutil
from pathlib import Path

from chexutils.core import locks, paths


def made_by_workbook(folder: Path) -> bool:
    """Whether ``folder`` (not a link) is a sweep or run folder the workbook created."""
    if folder.is_symlink() or not folder.is_dir():
        return False
    sweep = (folder / ".done").is_dir() and (folder / ".lock").is_file()
    run = (folder / "config.json").is_file() and (folder / ".lock").is_file()
    return sweep or run


def _lock_files(folder: Path) -> list[Path]:
    """The folder's lock and the locks of the folders inside it (run folders, caches), links never followed."""
    found = [folder / ".lock"]
    for child in sorted(folder.iterdir()):
        if child.is_dir() and not child.is_symlink():
            found += [p for p in sorted(child.glob(".lock")) if not p.is_symlink()]
            found += [p for p in sorted(child.glob("*/.lock")) if not p.is_symlink()]
    return [p for p in found if p.is_file() and not p.is_symlink()]


def clean_output(output_dir=None, dry_run: bool = False, log=print) -> list[Path]:
    """Remove the workbook's folders under ``output_dir`` (default ``output/``); returns those removed."""
    root = Path(output_dir) if output_dir else paths.OUTPUT_DIR
    removed = []
    for entry in sorted(root.iterdir()) if root.is_dir() else []:
        if entry.name == "README.md":
            continue
        if not made_by_workbook(entry):
            log(f"kept    {entry} (not made by the workbook)")
            continue
        try:
            with contextlib.ExitStack() as held:
                for lock in _lock_files(entry):
                    held.enter_context(locks.exclusive(lock, f"folder {lock.parent}"))
                if not dry_run:
                    shutil.rmtree(entry)
        except locks.FolderLocked as err:
            log(f"kept    {entry} (in use: {err})")
            continue
        log(f"{'would remove' if dry_run else 'removed'} {entry}")
        removed.append(entry)
    return removed
