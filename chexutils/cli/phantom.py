"""Command line: python -m chexutils phantom --out DIR [--patients N] [--valid-patients M] [--test-patients T]
[--size W H] [--seed S] [--mimics faint-sign|look-alike] [--label-noise hand-set|measured]."""

import argparse
import time

from chexutils.phantom.generate import DEFAULT_LABEL_NOISE, DEFAULT_SIZE, generate_phantom
from chexutils.phantom.label_model import LABEL_NOISES
from chexutils.phantom.render import MIMIC_STYLES


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m chexutils phantom", description=__doc__)
    parser.add_argument("--out", required=True, help="folder that will hold CheXpert-v1.0-small/")
    parser.add_argument("--patients", type=int, default=500, help="train patients (default 500)")
    parser.add_argument("--valid-patients", type=int, default=100, help="valid patients, one study each (default 100)")
    parser.add_argument(
        "--test-patients",
        type=int,
        default=100,
        help="official test set patients, one study each, read by 8 simulated radiologists (default 100; 0: none)",
    )
    parser.add_argument(
        "--size",
        type=int,
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
    parser.add_argument("--workers", type=int, default=None, help="processes for rendering (default: all cores)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    root = generate_phantom(
        args.out,
        args.patients,
        args.valid_patients,
        tuple(args.size),
        args.seed,
        args.workers,
        args.test_patients,
        mimics=args.mimics,
        label_noise=args.label_noise,
    )
    print(f"phantom CheXpert in {root} ({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
