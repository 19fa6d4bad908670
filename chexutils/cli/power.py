"""`python -m chexutils power`: the command line of ``chexutils.evaluation.power`` (its docstring is the help)."""

import argparse

import pandas as pd

from chexutils.cli.arguments import number, whole_number
from chexutils.evaluation import power as library
from chexutils.evaluation.power import ALPHA, CORRELATION, PLAN_NOISE_SD, POWER, REALISED, power_table
from chexutils.phantom import expected as ex
from chexutils.phantom.label_model import LABEL_NOISES


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m chexutils power",
        description=library.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--noise-sd",
        type=number(0),
        default=PLAN_NOISE_SD,
        help="probability-scale noise SD for k (> 0; default: the learner with the smallest effect, per observation)",
    )
    parser.add_argument(
        "--correlation",
        type=number(0, 1, low_inclusive=True),
        default=CORRELATION,
        help="correlation of the two policies' score noise (0 <= r < 1)",
    )
    parser.add_argument(
        "--realised", type=number(0), default=REALISED, help="share of the modelled effect planned for (> 0)"
    )
    parser.add_argument(
        "--seed-sd",
        type=number(0, low_inclusive=True),
        default=0.0,
        help="SD of one run's AUROC across training seeds (>= 0)",
    )
    parser.add_argument("--seeds", type=whole_number(1), default=1, help="training seeds per policy (>= 1)")
    parser.add_argument(
        "--label-noise",
        choices=LABEL_NOISES,
        default="hand-set",
        help="the phantom whose expected answer is sized: hand-set (default) or measured report-label noise",
    )
    args = parser.parse_args(argv)
    answer = ex.expected_answer(label_noise=args.label_noise)
    table = power_table(answer, args.noise_sd, args.correlation, args.realised, seed_sd=args.seed_sd, seeds=args.seeds)
    controls = ex.controls(answer)
    print(
        f"{args.label_noise} label noise; alpha {ALPHA} Holm over {len(answer)} observations, power {POWER}, "
        f"noise {'of the smallest-effect learner' if args.noise_sd is None else f'SD {args.noise_sd}'}, "
        f"correlation {args.correlation}, planning {args.realised:.0%} of the modelled effect, "
        f"seed SD {args.seed_sd} x {args.seeds} seed(s) per policy"
    )
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.to_string(float_format=lambda v: f"{v:.3f}"))
    for line in library.seeds_text(table, args.seed_sd, args.seeds, len(answer)):
        print(line)
    primary = controls["primary_positive_control"]
    if primary is None or primary not in table.index:
        print(f"no positive control: no observation's smallest effect over the learners reaches {ex.LARGE}")
        return
    print(
        f"primary positive control: {primary}, needs {table.loc[primary, 'studies needed']} truth-labelled studies; "
        f"null controls: {', '.join(controls['null_controls'])}"
    )


if __name__ == "__main__":
    main()
