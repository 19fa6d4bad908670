"""How many studies a U-Zeros / U-Ones comparison needs: the SD of the paired AUROC difference,
simulated from the phantom's expected answer, and the size for a given power after Holm.

    python -m chexutils power [--noise-sd 0.3] [--correlation 0.9] [--realised 0.5]

The paired difference of two correlated models on n studies has SD ~ k / sqrt(n); k is measured
here by simulating the phantom's kinds of study and scoring them as each policy's expected target
plus correlated noise. Holm compares the smallest p-value with alpha / m, so sizing each effect at
that level guarantees the power whatever the other observations do (conservative for the rest).
Seed-to-seed training noise does not shrink with more studies: it enters as a separate term.
"""

import math

import numpy as np
import pandas as pd
from scipy.stats import norm, rankdata

from chexutils.phantom import expected as ex

ALPHA, POWER = 0.05, 0.80
PLAN_NOISE_SD = 0.30  # the blurry learner: the smallest large effect of the positive control (docs/statistics.md)
CORRELATION = 0.9  # the two policies' score noise: same images, same backbone
REALISED = 0.5  # plan for half the modelled effect: a small CNN realises only part of it


def paired_delta_sd(
    shares: dict,
    targets: dict,
    noise_sd: float,
    correlation: float = CORRELATION,
    n_studies: int = 2000,
    reps: int = 200,
    seed: int = 0,
) -> float:
    """SD of AUROC(U-Ones) - AUROC(U-Zeros) against the truth on ``n_studies`` studies (Monte Carlo)."""
    rng = np.random.default_rng(seed)
    kinds = list(ex.KINDS)
    p = np.array([shares[k] for k in kinds], float)
    positive = np.array([k in ex.POSITIVE_KINDS for k in kinds])
    means = {pol: np.array([targets[pol][k] for k in kinds]) for pol in ex.COMPARED_POLICIES}
    deltas = []
    for _ in range(reps):
        kind = rng.choice(len(kinds), size=n_studies, p=p / p.sum())
        y = positive[kind]
        if y.all() or not y.any():
            continue
        shared = rng.standard_normal(n_studies)
        own = rng.standard_normal((2, n_studies))
        noise = np.sqrt(correlation) * shared + np.sqrt(1 - correlation) * own
        a = _auroc(y, means["U-Ones"][kind] + noise_sd * noise[0])
        b = _auroc(y, means["U-Zeros"][kind] + noise_sd * noise[1])
        deltas.append(a - b)
    return float(np.std(deltas, ddof=1))


def _auroc(y: np.ndarray, s: np.ndarray) -> float:
    """Mann-Whitney AUROC (ties count half)."""
    ranks = rankdata(s)
    n_pos = y.sum()
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * (len(y) - n_pos)))


def studies_needed(
    delta: float,
    k: float,
    n_tests: int,
    alpha: float = ALPHA,
    power: float = POWER,
    seed_sd: float = 0.0,
    seeds: int = 1,
) -> float:
    """Studies n such that a two-sided test at alpha / n_tests (Holm's first step) has ``power`` for ``delta``.

    Var(delta estimate) = k^2 / n + 2 seed_sd^2 / seeds (each arm the mean of ``seeds`` training runs);
    inf when the seed noise alone is too large."""
    z = norm.ppf(1 - alpha / (2 * n_tests)) + norm.ppf(power)
    room = (abs(delta) / z) ** 2 - 2 * seed_sd**2 / seeds
    return math.ceil(k**2 / room) if room > 0 else math.inf


def power_table(
    answer: dict | None = None,
    noise_sd: float = PLAN_NOISE_SD,
    correlation: float = CORRELATION,
    realised: float = REALISED,
    n_tests: int | None = None,
    seed_sd: float = 0.0,
    seeds: int = 1,
    seed: int = 0,
) -> pd.DataFrame:
    """Per observation with an expected better policy: the planned delta, k = SD * sqrt(n) and the studies needed."""
    answer = ex.expected_answer() if answer is None else answer
    n_tests = len(answer) if n_tests is None else n_tests
    rows = {}
    for obs, e in answer.items():
        if e.verdict not in ex.COMPARED_POLICIES:
            continue
        modelled = min(e.deltas.values(), key=abs)
        k = paired_delta_sd(e.shares, e.targets, noise_sd, correlation, seed=seed) * math.sqrt(2000)
        planned = realised * modelled
        rows[obs] = {
            "expected": e.verdict,
            "prevalence": e.prevalence,
            "modelled delta (smallest)": modelled,
            "planned delta": planned,
            "k = SD x sqrt(studies)": k,
            "studies needed": studies_needed(planned, k, n_tests, seed_sd=seed_sd, seeds=seeds),
        }
    return pd.DataFrame(rows).T.rename_axis("observation")
