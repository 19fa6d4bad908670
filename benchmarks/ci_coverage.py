"""Coverage of 95% AUROC intervals by simulation: the percentile bootstrap vs the logit DeLong interval.

    .venv/bin/python benchmarks/ci_coverage.py [--data-sets 1000] [--resamples 400]

Binormal scores (positives shifted so the true AUROC is known), a grid of true AUROC x positives
x negatives; prints the share of data sets whose interval holds the truth. Why metrics prints no
interval below 10 positives, and why it uses chexutils.scoring.stats.auroc_interval. Prints, asserts nothing.
"""

import argparse
import time

import numpy as np

from chexutils.scoring import stats
from chexutils.scoring.metrics import resample_counts, weighted_auroc_ap


def bootstrap_coverage(auroc, positives, negatives, data_sets, resamples, seed):
    """Coverage of the percentile bootstrap of studies (the interval metrics printed before issue 9)."""
    rng = np.random.default_rng(seed)
    y = np.r_[np.ones(positives, bool), np.zeros(negatives, bool)]
    shift, hits = stats.binormal_auroc_shift(auroc), 0
    for i in range(data_sets):
        values = weighted_auroc_ap(
            y, rng.normal(size=len(y)) + shift * y, resample_counts(len(y), resamples, seed=seed * 100_000 + i)
        )[0]
        low, high = np.quantile(values[np.isfinite(values)], [0.025, 0.975])
        hits += low <= auroc <= high
    return hits / data_sets


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-sets", type=int, default=1000)
    parser.add_argument("--resamples", type=int, default=400)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    print("| true AUROC | positives | negatives | percentile bootstrap | logit DeLong (printed) |")
    print("|---:|---:|---:|---:|---:|")
    for i, (auroc, positives, negatives) in enumerate(
        (a, m, n) for a in (0.75, 0.9, 0.95) for m in (3, 5, 10, 30) for n in (150,)
    ):
        boot = bootstrap_coverage(auroc, positives, negatives, args.data_sets // 4, args.resamples, i)
        logit = stats.coverage(auroc, positives, negatives, args.data_sets, seed=i)
        print(f"| {auroc:.2f} | {positives} | {negatives} | {boot:.3f} | {logit:.3f} |")
    print(
        f"({time.perf_counter() - start:.1f} s; bootstrap on {args.data_sets // 4} data sets, DeLong on {args.data_sets})"
    )


if __name__ == "__main__":
    main()
