"""Command line: python -m chexutils phantom --out DIR [--patients N] [--valid-patients M] [--test-patients T]
[--size W H] [--seed S] [--mimics faint-sign|look-alike] [--label-noise hand-set|measured]."""

import argparse
import sys
import time
from pathlib import Path

from chexutils.cli.arguments import whole_number
from chexutils.core.errors import DataError
from chexutils.core.io import write_error
from chexutils.phantom.generate import DEFAULT_LABEL_NOISE, DEFAULT_SIZE, generate_phantom
from chexutils.phantom.label_model import LABEL_NOISES
from chexutils.phantom.render import MIMIC_STYLES


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chexutils phantom", description=__doc__)
    parser.add_argument("--out", required=True, help="folder that will hold CheXpert-v1.0-small/")
    parser.add_argument("--patients", type=whole_number(1), default=500, help="train patients (default 500)")
    parser.add_argument(
        "--valid-patients", type=whole_number(1), default=100, help="valid patients, one study each (default 100)"
    )
    parser.add_argument(
        "--test-patients",
        type=whole_number(0),
        default=100,
        help="official test set patients, one study each, read by 8 simulated radiologists (default 100; 0: none)",
    )
    parser.add_argument(
        "--size",
        type=whole_number(32),
        nargs=2,
        metavar=("W", "H"),
        default=list(DEFAULT_SIZE),
        help=f"image width and height (default {DEFAULT_SIZE[0]} {DEFAULT_SIZE[1]})",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--mimics",
        choices=MIMIC_STYLES,
        default=MIMIC_STYLES[0],
        help="how a truly negative equivocal study is drawn: the finding's own sign at faint strength "
        "(default; the expected answer's premise) or a hand-made look-alike a network may tell apart",
    )
    parser.add_argument(
        "--label-noise",
        choices=LABEL_NOISES,
        default=DEFAULT_LABEL_NOISE,
        help="how report labels are drawn given the truth: hand-set (default; planted q and an equivocal zone, "
        "rates like the real train.csv) or measured (CheXpert's measured P(report label | truth) from the "
        "public test set)",
    )
    parser.add_argument(
        "--workers", type=whole_number(1), default=None, help="processes for rendering (default: all cores)"
    )
    args = parser.parse_args(argv)
    start = time.perf_counter()
    out = Path(args.out)
    try:
        if out.exists() and not out.is_dir():
            raise DataError(f"{out}: --out names an existing file; expected a folder (new, or holding a phantom)")
        root = generate_phantom(
            out,
            args.patients,
            args.valid_patients,
            tuple(args.size),
            args.seed,
            args.workers,
            args.test_patients,
            mimics=args.mimics,
            label_noise=args.label_noise,
        )
    except DataError as err:  # real data or another phantom already there, a full disk, a read-only folder
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"error: {write_error(err, out, 'the phantom')}", file=sys.stderr)
        return 2
    print(f"phantom CheXpert in {root} ({time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
