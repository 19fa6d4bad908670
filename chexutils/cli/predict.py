"""`python -m chexutils predict`: the command line of ``chexutils.scoring.predict`` (its docstring is the help)."""

import argparse
import os
import sys
from pathlib import Path

from chexutils.cli.arguments import whole_number
from chexutils.core.errors import DataError
from chexutils.core.io import Terminated, terminate_cleanly, write_table
from chexutils.explain.heatmaps import write_heatmaps
from chexutils.models.checkpoint import CheckpointError
from chexutils.scoring import predict as library
from chexutils.scoring.predict import find_images, predict_images


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m chexutils predict",
        description=library.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("run_dir", help="a run folder (config.json + best.pt), trained or imported")
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files and/or folders")
    parser.add_argument("--out", required=True, help="CSV to write: path, then one probability per observation")
    parser.add_argument(
        "--batch-size", type=whole_number(0), default=0, help="images per batch (default 0: twice the run's)"
    )
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1 ...")
    parser.add_argument("--workers", type=whole_number(0), default=0, help="image-reading worker processes (default 0)")
    parser.add_argument(
        "--heatmaps",
        metavar="DIR",
        help="also write Grad-CAM overlay PNGs of every readable image "
        "and observation into DIR (+ heatmaps.csv; chexutils.explain.heatmaps)",
    )
    args = parser.parse_args(argv)
    with terminate_cleanly():  # SIGTERM: finally blocks remove the <name>.<pid>.tmp of a CSV being written
        try:
            return _predict(args)
        except Terminated as stop:
            print(f"error: stopped by {stop.name}; {args.out} left as it was", file=sys.stderr)
            return 128 + stop.signum


def _predict(args) -> int:
    try:
        check_out(args.out, find_images(args.paths)[0])  # before any model is loaded or image read
        table, failures, seconds = predict_images(args.run_dir, args.paths, args.batch_size, args.device, args.workers)
    except (DataError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for failure in failures:
        print(f"cannot read {failure}", file=sys.stderr)
    if len(table):
        write_table(table, args.out, index=False, float_format="%.6f")
    if args.heatmaps and len(table):
        written = write_heatmaps(args.run_dir, table["path"].tolist(), args.heatmaps)
        print(f"wrote {len(written)} heatmap PNG(s) -> {args.heatmaps}")
    rate = len(table) / seconds if seconds > 0 else float("nan")
    print(
        f"predicted {len(table)} image(s) in {seconds:.2f} s ({rate:.1f} images/s) -> "
        f"{args.out if len(table) else 'nothing written'}; {len(failures)} could not be read"
    )
    return 1 if failures or not len(table) else 0


def check_out(out, images) -> None:
    """--out must be a new or writable file: not a folder, not one of the input images, not read-only,
    in a folder this process can write (a file's write bits count even for root: read-only means keep)."""
    out = Path(out)
    if out.is_dir():
        raise DataError(f"--out {out}: is a folder; expected the name of the CSV file to write")
    target = out.resolve()
    if any(target == Path(image).resolve() for image in images):
        raise DataError(f"--out {out}: is one of the input images; writing the CSV would overwrite it")
    if out.exists() and (not os.access(out, os.W_OK) or not out.stat().st_mode & 0o222):
        raise DataError(f"--out {out}: the file is read-only; choose another file or make it writable")
    folder = target.parent
    while not folder.exists():  # write_table creates the missing folders under the nearest existing one
        folder = folder.parent
    if not folder.is_dir():
        raise DataError(f"--out {out}: {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK) or not folder.stat().st_mode & 0o222:
        raise DataError(f"--out {out}: cannot write into the folder {folder} (read-only)")


if __name__ == "__main__":
    sys.exit(main())
