"""How many studies a U-Zeros / U-Ones comparison needs: the SD of the paired AUROC difference,
simulated from the phantom's expected answer, and the size for a given power after Holm.

    python -m chexutils power [--noise-sd TAU] [--correlation 0.9] [--realised 0.5]

Each observation is planned for the SMALLEST modelled effect over the expected answer's family of
learners (noise on the probability scale and on the logit, ``expected.LEARNERS``), and its k is
simulated with that same learner (``--noise-sd`` overrides it with probability-scale noise of SD TAU).
The paired difference of two correlated models on n studies has SD ~ k / sqrt(n); k is measured
here by simulating the phantom's kinds of study and scoring them as each policy's expected target
plus correlated noise. Holm compares the smallest p-value with alpha / m, so sizing each effect at
that level guarantees the power whatever the other observations do (conservative for the rest).
The power is that of the test 05 actually runs (seed-aware DeLong, t at Satterthwaite's df): with
2 seeds per arm its seed variance rests on 2 df, which costs far more than the normal rule says.
Seed-to-seed training noise does not shrink with more studies: where it alone keeps the power
short, the output says what no number of studies can detect and how many seeds per arm would.
"""

import math

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from chexutils.phantom import expected as ex
from chexutils.scoring.stats import seed_arm_power, smallest_detectable

ALPHA, POWER = 0.05, 0.80
PLAN_NOISE_SD = None  # None: the learner of the family with the smallest effect (docs/statistics.md)
CORRELATION = 0.9  # the two policies' score noise: same images, same backbone
REALISED = 1.0  # plan for the smallest modelled effect of the learner family (the weakest learner it models)


def paired_delta_sd(
    shares: dict,
    targets: dict,
    noise_sd: float,
    correlation: float = CORRELATION,
    n_studies: int = 2000,
    reps: int = 200,
    seed: int = 0,
    scale: str = "probability",
) -> float:
    """SD of AUROC(U-Ones) - AUROC(U-Zeros) against the truth on ``n_studies`` studies (Monte Carlo);
    the noise of SD ``noise_sd`` is added on ``scale`` ("probability" or "logit", ``expected.on_scale``)."""
    rng = np.random.default_rng(seed)
    kinds = [k for k in ex.KINDS if k in shares]
    p = np.array([shares[k] for k in kinds], float)
    positive = np.array([k in ex.POSITIVE_KINDS for k in kinds])
    means = {pol: ex.on_scale(np.array([targets[pol][k] for k in kinds], float), scale) for pol in ex.COMPARED_POLICIES}
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


def seed_part(seed_sd: float, seeds: int) -> tuple[float, int]:
    """(se_seed, seed_df) of two arms of ``seeds`` runs each: seed_sd sqrt(2 / seeds) on 2 (seeds - 1) df."""
    return seed_sd * math.sqrt(2 / seeds), 2 * (seeds - 1)


STUDY_GRID = np.unique(np.round(np.geomspace(10, 10**7, 160)).astype(int))  # study counts searched
MAX_SEEDS = 20  # the most seeds per arm suggested


def studies_needed(
    delta: float,
    k: float,
    n_tests: int,
    alpha: float = ALPHA,
    power: float = POWER,
    seed_sd: float = 0.0,
    seeds: int = 1,
) -> float:
    """The fewest studies n at which the test 05 runs (stats.seed_arm_test) at alpha / n_tests (Holm's
    first step) has ``power`` for ``delta``; inf where no n up to 10 million does.

    The paired difference has study SE k / sqrt(n) and seed SE seed_sd sqrt(2 / seeds) (each arm the
    mean of ``seeds`` training runs); the test estimates the seed part on 2 (seeds - 1) df and refers
    to t at Satterthwaite's df, so its power is stats.seed_arm_power. That power is not monotone in
    n: more studies shrink the study part, which pulls the df down to the seeds' own 2 (seeds - 1),
    so the search walks STUDY_GRID upwards and refines by bisection inside the first step that reaches
    ``power``. One seed per arm with seed noise: inf (that test leaves the seed noise out, so its
    level is not held; plan for at least 2 seeds).
    """
    if seed_sd > 0 and seeds < 2:
        return math.inf
    se_seed, seed_df = seed_part(seed_sd, seeds)

    def enough(n: int) -> bool:
        return seed_arm_power(delta, k / math.sqrt(n), se_seed, seed_df, alpha, n_tests) >= power

    low = 1
    for high in STUDY_GRID:
        if enough(high):
            while high - low > 1:
                middle = (low + high) // 2
                low, high = (low, middle) if enough(middle) else (middle, high)
            return int(high)
        low = int(high)
    return math.inf


def best_detectable(k: float, seed_sd: float, seeds: int, n_tests: int, alpha: float = ALPHA, power: float = POWER):
    """(the smallest |delta| the test detects with ``power`` at any study count of STUDY_GRID, that count)."""
    se_seed, seed_df = seed_part(seed_sd, seeds)
    deltas = smallest_detectable(k / np.sqrt(STUDY_GRID), se_seed, seed_df, alpha, n_tests, power)
    best = int(np.argmin(deltas))
    return float(deltas[best]), int(STUDY_GRID[best])


def seeds_needed(delta: float, k: float, seed_sd: float, n_tests: int, alpha: float = ALPHA, power: float = POWER):
    """(the fewest seeds per arm, 2 to MAX_SEEDS, with which some study count sizes ``delta``, those studies) or (inf, inf)."""
    for seeds in range(2, MAX_SEEDS + 1):
        n = studies_needed(delta, k, n_tests, alpha, power, seed_sd, seeds)
        if math.isfinite(n):
            return seeds, n
    return math.inf, math.inf


def seeds_text(table: pd.DataFrame, seed_sd: float, seeds: int, n_tests: int) -> list[str]:
    """A sentence for each observation that no number of studies can size with ``seeds`` per arm."""
    lines = []
    for obs, row in table.iterrows():
        if math.isfinite(row["studies needed"]):
            continue
        k, planned = row["k = SD x sqrt(studies)"], row["planned delta"]
        more, n = seeds_needed(planned, k, seed_sd, n_tests)
        advice = (
            f"use {more} seeds per arm ({n} studies)"
            if math.isfinite(more)
            else f"not even {MAX_SEEDS} seeds per arm suffice"
        )
        if seed_sd > 0 and seeds < 2:
            lines.append(f"{obs}: with 1 seed per arm the test leaves seed noise out (its level is not held); {advice}")
            continue
        floor, _ = best_detectable(k, seed_sd, seeds, n_tests)
        lines.append(
            f"{obs}: with {seeds} seeds per arm no Δ below {floor:.3f} is detectable at {POWER:.0%} power, however "
            f"many studies (planned {planned:+.3f}); {advice}"
        )
    return lines


def power_table(
    answer: dict | None = None,
    noise_sd: float | None = PLAN_NOISE_SD,
    correlation: float = CORRELATION,
    realised: float = REALISED,
    n_tests: int | None = None,
    seed_sd: float = 0.0,
    seeds: int = 1,
    seed: int = 0,
) -> pd.DataFrame:
    """Per observation with an expected better policy: the planned delta (``realised`` x the smallest modelled
    effect over the family of learners), k = SD * sqrt(n) simulated with that learner (or probability-scale
    noise of SD ``noise_sd`` when given) and the studies needed."""
    answer = ex.expected_answer() if answer is None else answer
    n_tests = len(answer) if n_tests is None else n_tests
    rows = {}
    for obs, e in answer.items():
        if e.verdict not in ex.COMPARED_POLICIES:
            continue
        name, modelled = e.smallest
        plan = ex.learner(name) if noise_sd is None else ex.Learner("probability", noise_sd)
        k = paired_delta_sd(e.shares, e.targets, plan.tau, correlation, seed=seed, scale=plan.scale) * math.sqrt(2000)
        planned = realised * modelled
        rows[obs] = {
            "expected": e.verdict,
            "prevalence": e.prevalence,
            "smallest-effect learner": name,
            "modelled delta (smallest)": modelled,
            "planned delta": planned,
            "k = SD x sqrt(studies)": k,
            "studies needed": studies_needed(planned, k, n_tests, seed_sd=seed_sd, seeds=seeds),
        }
    columns = [
        "expected",
        "prevalence",
        "smallest-effect learner",
        "modelled delta (smallest)",
        "planned delta",
        "k = SD x sqrt(studies)",
        "studies needed",
    ]  # also when no observation has an expected policy (the hand-set phantom over the learner family)
    return pd.DataFrame.from_dict(rows, orient="index", columns=columns).rename_axis("observation")
