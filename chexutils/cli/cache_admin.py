"""`python -m chexutils cache_admin`: the command line of ``chexutils.data.cache_admin`` (its docstring is the help)."""

import argparse
import sys

from chexutils.core import locks, paths
from chexutils.data import cache_admin as library
from chexutils.data.cache_admin import clean_caches, default_roots, list_caches


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m chexutils cache_admin",
        description=library.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=["list", "clean"])
    parser.add_argument("cache_root", nargs="*", help="folders holding caches (default: all the project's)")
    parser.add_argument("--all", action="store_true", help="clean: also remove complete caches")
    args = parser.parse_args(argv)
    roots = [paths.resolve(r) for r in args.cache_root] or default_roots()
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
