"""`python -m chexutils housekeeping`: the command line of ``chexutils.workbook.housekeeping`` (its docstring is the help)."""

import argparse
import sys

from chexutils.core import paths
from chexutils.core.errors import DataError
from chexutils.workbook import housekeeping as library
from chexutils.workbook.housekeeping import clean_output


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m chexutils housekeeping",
        description=library.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=["clean-output"])
    parser.add_argument("--dry-run", action="store_true", help="say what would be removed, remove nothing")
    args = parser.parse_args(argv)
    try:
        removed = clean_output(dry_run=args.dry_run)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{'would remove' if args.dry_run else 'removed'} {len(removed)} folder(s) under {paths.OUTPUT_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
