"""`python -m chexutils predict`: the command line of ``chexutils.scoring.predict`` (its docstring is the help)."""

import argparse
import sys

from chexutils.core.errors import DataError
from chexutils.core.io import write_table
from chexutils.explain.heatmaps import write_heatmaps
from chexutils.models.checkpoint import CheckpointError
from chexutils.scoring import predict as library
from chexutils.scoring.predict import predict_images


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m chexutils predict",
        description=library.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("run_dir", help="a run folder (config.json + best.pt), trained or imported")
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files and/or folders")
    parser.add_argument("--out", required=True, help="CSV to write: path, then one probability per observation")
    parser.add_argument("--batch-size", type=int, default=0, help="images per batch (default: twice the run's)")
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1 ...")
    parser.add_argument("--workers", type=int, default=0, help="image-reading worker processes (default 0)")
    parser.add_argument(
        "--heatmaps",
        metavar="DIR",
        help="also write Grad-CAM overlay PNGs of every readable image "
        "and observation into DIR (+ heatmaps.csv; chexutils.explain.heatmaps)",
    )
    args = parser.parse_args(argv)
    try:
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


if __name__ == "__main__":
    sys.exit(main())
