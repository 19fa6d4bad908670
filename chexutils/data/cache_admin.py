"""List and remove image caches: leftovers of interrupted builds, caches of changed images, all.

    python -m chexutils cache_admin list [CACHE_ROOT ...]
    python -m chexutils cache_admin clean [CACHE_ROOT ...] [--all]     # `make clean-cache`

A cache is a folder carrying the marker file the cache writes first (``.chexutils-cache``; a
complete cache from before the marker is recognised by its ``meta.json`` and ``images.npy``).
Nothing else is ever listed or removed, whatever folder is named. Without ``--all``, ``clean``
removes partial caches (marker but no ``meta.json``: an interrupted or failed build) and caches
of an older format. A cache that a process is building now (its lock is held) is never removed.
Without CACHE_ROOT: where caches really are, ``data/<dataset>/cache`` (training's default,
``<data_dir>/cache``) and ``output/<sweep>/cache``.
"""

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from chexutils.core import locks, paths
from chexutils.data.cache import CACHE_VERSION, MARKER


@dataclass
class CacheInfo:
    folder: Path
    state: str  # "complete", "partial", "building", "old format"
    images: int
    megabytes: float


def is_cache(folder: Path) -> bool:
    """Whether ``folder`` (not a link) was made by the image cache: its marker, or an older complete cache."""
    if folder.is_symlink() or not folder.is_dir():
        return False
    if (folder / MARKER).is_file():
        return True
    try:
        record = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and "version" in record and (folder / "images.npy").is_file()


def default_roots() -> list[Path]:
    """Where the project's caches live: ``data/<dataset>/cache`` and ``output/<sweep>/cache``."""
    found = [*paths.DATA_DIR.glob("*/cache"), *paths.OUTPUT_DIR.glob("*/cache")]
    return sorted(p for p in found if p.is_dir() and not p.is_symlink())


def list_caches(cache_root) -> list[CacheInfo]:
    """Every cache folder under ``cache_root`` (only folders the cache made) with its state, image count and size."""
    root = Path(cache_root)
    found = []
    for folder in sorted(p for p in root.glob("*") if is_cache(p)) if root.is_dir() else []:
        meta = folder / "meta.json"
        if locks.is_locked(folder / ".lock"):
            state = "building"
        elif not meta.is_file():
            state = "partial"
        else:
            try:
                record = json.loads(meta.read_text())
            except ValueError:
                record = {}
            state = "complete" if record.get("version") == CACHE_VERSION else "old format"
        count = 0
        if meta.is_file():
            try:
                count = int(json.loads(meta.read_text()).get("count", 0))
            except ValueError:
                pass
        size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 1e6
        found.append(CacheInfo(folder, state, count, size))
    return found


def clean_caches(cache_root, everything: bool = False, log=print) -> list[Path]:
    """Remove partial and old-format caches (``everything``: every cache not being built); returns them."""
    removed = []
    for info in list_caches(cache_root):
        if info.state == "building" or (info.state == "complete" and not everything):
            if info.state == "building":
                log(f"kept   {info.folder} (being built by {locks.holder(info.folder / '.lock')})")
            continue
        with locks.exclusive(info.folder / ".lock", f"image cache {info.folder}"):  # no builder starts meanwhile
            if not is_cache(info.folder):  # replaced by something else since it was listed
                continue
            shutil.rmtree(info.folder)
        log(f"removed {info.folder} ({info.state}, {info.megabytes:.1f} MB)")
        removed.append(info.folder)
    return removed
