"""Time the vectorised bootstrap: 14 observations x 1,000 resamples x 200 studies (prints seconds).

.venv/bin/python benchmarks/bootstrap.py
"""

import time

import numpy as np
import pandas as pd

from chexutils.core.labels import OBSERVATIONS
from chexutils.scoring.metrics import bootstrap_auroc


def main(studies: int = 200, resamples: int = 1000) -> None:
    rng = np.random.default_rng(12)
    index = pd.Index([f"study{i}" for i in range(studies)], name="study")
    labels = pd.DataFrame(rng.choice([1.0, 0.0, -1.0, np.nan], (studies, len(OBSERVATIONS))), index, OBSERVATIONS)
    scores = pd.DataFrame(rng.random(labels.shape) + 0.4 * labels.fillna(0).clip(lower=0), index, OBSERVATIONS)
    bootstrap_auroc(labels, scores, n_resamples=20)  # warm-up
    start = time.perf_counter()
    bootstrap_auroc(labels, scores, n_resamples=resamples)
    print(f"bootstrap_auroc {len(OBSERVATIONS)} x {resamples} x {studies}: {time.perf_counter() - start:.3f} s")


if __name__ == "__main__":
    main()
