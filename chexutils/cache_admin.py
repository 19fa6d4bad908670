"""List and remove image caches: leftovers of interrupted builds, caches of changed images, all.

    python -m chexutils.cache_admin list [CACHE_ROOT ...]
    python -m chexutils.cache_admin clean [CACHE_ROOT ...] [--all]     # `make clean-cache`

Without ``--all``, ``clean`` removes partial caches (no ``meta.json``: an interrupted or failed
build) and caches of an older format. A cache that a process is building now (its lock is held)
is never removed. Without CACHE_ROOT: the training default (``TrainConfig().cache_dir``) and every
sweep's ``output/<sweep>/cache``.
"""

import argparse
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from . import locks, paths
from .cache import CACHE_VERSION


@dataclass
class CacheInfo:
    folder: Path
    state: str  # "complete", "partial", "building", "old format"
    images: int
    megabytes: float


def list_caches(cache_root) -> list[CacheInfo]:
    """Every cache folder under ``cache_root`` with its state, image count and size on disk."""
    root = Path(cache_root)
    found = []
    for folder in sorted(p for p in root.glob("*") if p.is_dir()) if root.is_dir() else []:
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
            shutil.rmtree(info.folder)
        log(f"removed {info.folder} ({info.state}, {info.megabytes:.1f} MB)")
        removed.append(info.folder)
    return removed


def main(argv=None) -> int:
    from .train_config import TrainConfig

    parser = argparse.ArgumentParser(
        prog="python -m chexutils.cache_admin",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=["list", "clean"])
    parser.add_argument("cache_root", nargs="*", help="folders holding caches (default: all the project's)")
    parser.add_argument("--all", action="store_true", help="clean: also remove complete caches")
    args = parser.parse_args(argv)
    roots = [paths.resolve(r) for r in args.cache_root] or [
        paths.resolve(TrainConfig().cache_dir),
        *sorted(paths.OUTPUT_DIR.glob("*/cache")),
    ]
    for root in roots:
        if args.command == "list":
            caches = list_caches(root)
            for info in caches:
                print(f"{info.state:<10} {info.images:>8} images {info.megabytes:>10.1f} MB  {info.folder}")
            print(f"{len(caches)} cache(s) under {root}")
            continue
        try:
            removed = clean_caches(root, everything=args.all)
        except locks.FolderLocked as err:  # a build started between listing and removing
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(f"removed {len(removed)} cache(s) under {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
