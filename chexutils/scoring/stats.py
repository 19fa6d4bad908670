"""Small-sample statistics for AUROC: DeLong's variance (also clustered by patient), a logit interval
that covers with few positives, Holm's adjustment, the seeds x patients hierarchical bootstrap, and Cohen's and Fleiss' kappa
(weighted by resample counts, so a bootstrap is one matrix product).

DeLong, DeLong & Clarke-Pearson (1988), Biometrics 44:837-845: AUROC variance from the
"structural components" (placement values) of the Mann-Whitney statistic. Sun & Xu (2014), IEEE
Signal Processing Letters 21:1389-1393: the placements from three midrank computations, so the
whole covariance matrix of k correlated AUROCs costs O(k n log n). Obuchowski (1997), Biometrics
53:567-578: the same components summed per cluster (patient) when a patient has several studies.
"""

import math

import numpy as np
import pandas as pd
from scipy.optimize import brentq
from scipy.stats import binomtest, chi2, norm, rankdata
from scipy.stats import t as t_dist

Z_POWER_80 = float(norm.ppf(0.8))  # 0.8416: the z of 80% power


def placements(y, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(v10, v01, auroc) for k score rows on the same studies, by midranks (Sun & Xu 2014).

    v10[k, i]: share of negatives scored below positive i (ties count half); v01[k, j]: share of
    positives scored above negative j. Both average to the AUROC (the Mann-Whitney statistic).
    """
    y = np.asarray(y).astype(bool)
    scores = np.atleast_2d(np.asarray(scores, float))
    m, n = int(y.sum()), int((~y).sum())
    ranks = rankdata(scores, axis=1)  # midranks over all studies
    r_pos = rankdata(scores[:, y], axis=1)
    r_neg = rankdata(scores[:, ~y], axis=1)
    v10 = (ranks[:, y] - r_pos) / n
    v01 = 1.0 - (ranks[:, ~y] - r_neg) / m
    return v10, v01, v10.mean(axis=1)


def delong_cov(y, scores, groups=None) -> tuple[np.ndarray, np.ndarray]:
    """(AUROCs, their k x k covariance) for k score rows of the same labelled studies.

    Without ``groups`` (or with one study per group) DeLong's estimator, S10/m + S01/n; with
    patients as ``groups`` Obuchowski's clustered estimator, which sums each patient's placements,
    so two studies of one patient are not counted as independent evidence.
    """
    y = np.asarray(y).astype(bool)
    v10, v01, auc = placements(y, scores)
    m, n = v10.shape[1], v01.shape[1]
    codes = None if groups is None else pd.factorize(np.asarray(groups), use_na_sentinel=False)[0]
    if codes is None or len(np.unique(codes)) == len(codes):
        s10 = np.atleast_2d(np.cov(v10, ddof=1)) if m > 1 else np.zeros((len(auc), len(auc)))
        s01 = np.atleast_2d(np.cov(v01, ddof=1)) if n > 1 else np.zeros((len(auc), len(auc)))
        return auc, s10 / m + s01 / n
    n_clusters = codes.max() + 1
    pos_codes, neg_codes = codes[y], codes[~y]
    per_cluster = lambda values, c: np.stack([np.bincount(c, row, n_clusters) for row in values])  # noqa: E731
    m_i = np.bincount(pos_codes, minlength=n_clusters)
    n_i = np.bincount(neg_codes, minlength=n_clusters)
    d10 = per_cluster(v10, pos_codes) - m_i * auc[:, None]  # (k, clusters)
    d01 = per_cluster(v01, neg_codes) - n_i * auc[:, None]
    factor = n_clusters / (n_clusters - 1)
    s10 = factor * d10 @ d10.T / m
    s01 = factor * d01 @ d01.T / n
    s11 = factor * d10 @ d01.T
    return auc, s10 / m + s01 / n + (s11 + s11.T) / (m * n)


def auroc_influence(y, scores, clusters: np.ndarray, n_clusters: int) -> tuple[np.ndarray, np.ndarray]:
    """(AUROCs, influence per cluster) of k score rows: psi[k, i] = D10_i / m + D01_i / n.

    D10_i and D01_i are cluster i's summed placements less their expectation (as in delong_cov's
    clustered form), so n_c / (n_c - 1) * sum_i psi psi' is Obuchowski's covariance. ``clusters``
    (codes 0 .. n_clusters - 1, one per study of ``y``) may be shared by several label sets, so
    the influences of AUROCs on different tasks of the same patients add up: the variance of any
    linear combination (e.g. a difference of task means) is n_c / (n_c - 1) * sum_i (c' psi_i)^2.
    """
    y = np.asarray(y).astype(bool)
    v10, v01, auc = placements(y, scores)
    m, n = v10.shape[1], v01.shape[1]
    pos, neg = clusters[y], clusters[~y]
    d10 = (
        np.stack([np.bincount(pos, row, n_clusters) for row in v10])
        - np.bincount(pos, minlength=n_clusters) * auc[:, None]
    )
    d01 = (
        np.stack([np.bincount(neg, row, n_clusters) for row in v01])
        - np.bincount(neg, minlength=n_clusters) * auc[:, None]
    )
    return auc, d10 / m + d01 / n


def auroc_interval(y, s, groups=None, level: float = 0.95) -> dict:
    """AUROC with a logit-scale interval: SE from (clustered) DeLong, t quantile on the units resampled.

    Without ``groups`` (or one study per group) the t has min(m, n) - 1 df (m, n positive and negative
    studies). Clustered by ``groups`` (patients), Obuchowski's variance rests on the patients, not the
    studies, so the t has min(positive patients, negative patients) - 1 df (``df`` in the result; a
    patient with positive and negative studies counts in both). The logit keeps the interval inside
    (0, 1) and makes it asymmetric near 1, where the plain Wald or percentile-bootstrap interval
    undercovers with few positives (see coverage()); near 0 and 1 see logit_interval().
    """
    y = np.asarray(y).astype(bool)
    m, n = int(y.sum()), int((~y).sum())
    auc, cov = delong_cov(y, s, groups)
    df = min(m, n) - 1
    if groups is not None:
        df = min(*cluster_counts(y, groups)) - 1
    low, high = logit_interval(auc[0], max(float(cov[0, 0]), 0.0), m, n, level, df=df)
    return {
        "auroc": float(auc[0]),
        "ci_low": float(low),
        "ci_high": float(high),
        "se": math.sqrt(max(cov[0, 0], 0.0)),
        "df": max(df, 1),
    }


def cluster_counts(y, groups) -> tuple[int, int]:
    """(groups with a positive study, groups with a negative study): the units a clustered AUROC rests on."""
    y = np.asarray(y).astype(bool)
    keys = np.asarray(groups)
    return len(pd.unique(keys[y])), len(pd.unique(keys[~y]))


def logit_interval(auc, var, m: int, n: int, level: float = 0.95, df: int | None = None):
    """(low, high) = expit(logit(a) -/+ t_df * sqrt(var) / (a (1 - a))), a = AUROC kept in [e, 1 - e].

    ``df`` defaults to min(m, n) - 1 (at least 1); auroc_interval passes the clustered df. e = 1/(2 min(m, n)).
    Within e of 0 or 1 (e.g. perfect separation, where DeLong's variance is 0) the
    variance is at least Hanley & McNeil's (1982, Radiology 143:29-36) at that distance, so a
    perfect AUROC on 12 positives gets an interval, not a point; the interval then reaches the point.
    """
    auc, var = np.asarray(auc, float), np.asarray(var, float)
    edge = 0.5 / min(m, n)
    near = (auc < edge) | (auc > 1 - edge)
    var = np.where(near, np.maximum(var, hanley_mcneil_var(np.clip(auc, edge, 1 - edge), m, n)), var)
    a = np.clip(auc, edge, 1 - edge)
    df = min(m, n) - 1 if df is None else df
    half = t_dist.ppf((1 + level) / 2, max(df, 1)) * np.sqrt(var) / (a * (1 - a))
    logit = np.log(a / (1 - a))
    low, high = 1 / (1 + np.exp(-(logit - half))), 1 / (1 + np.exp(-(logit + half)))
    return np.minimum(low, auc), np.maximum(high, auc)  # near 0 or 1 the point itself may lie past the centre


def hanley_mcneil_var(auc, m: int, n: int):
    """Hanley & McNeil's (1982) AUROC variance from the AUROC alone (exponential score model)."""
    a = np.asarray(auc, float)
    q1, q2 = a / (2 - a), 2 * a**2 / (1 + a)
    return (a * (1 - a) + (m - 1) * (q1 - a**2) + (n - 1) * (q2 - a**2)) / (m * n)


def delong_test(y, s_a, s_b, groups=None) -> dict:
    """Paired test of AUROC(b) - AUROC(a) on the same studies: delta, se, z, two-sided normal p."""
    auc, cov = delong_cov(y, np.vstack([s_a, s_b]), groups)
    delta = float(auc[1] - auc[0])
    var = max(float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]), 0.0)
    return _z_result(delta, math.sqrt(var))


def _z_result(delta: float, se: float) -> dict:
    if se == 0.0:
        return {"delta": delta, "se": 0.0, "z": math.nan, "p_value": 1.0 if delta == 0 else 0.0}
    z = delta / se
    return {"delta": delta, "se": se, "z": z, "p_value": float(2 * norm.sf(abs(z)))}


def wilson_interval(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for k successes of n (scipy's binomtest); NaN, NaN when n is 0."""
    if n == 0:
        return math.nan, math.nan
    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=level, method="wilson")
    return float(ci.low), float(ci.high)


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error), NaN entries kept NaN and not counted.

    Sorted p_(1) <= ... <= p_(m): adjusted p_(i) = max_{j <= i} min(1, (m - j + 1) p_(j)).
    """
    p = np.asarray(p_values, float)
    out = np.full(p.shape, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    order = finite[np.argsort(p[finite], kind="stable")]
    m = len(order)
    stepped = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(stepped)
    return out


POWER_NODES = 500  # equal-probability nodes of the seed variance's chi-square in seed_arm_power


def _critical(se_study: float, se_seed: float, seed_df: int, level: float) -> np.ndarray:
    """seed_arm_test's critical |delta| at two-sided ``level`` for each node of its estimated seed variance.

    The seed part is estimated as se_seed^2 W / nu, W ~ chi2_nu (nu = ``seed_df``); the test refers
    delta / sqrt(se_study^2 + se_seed^2 W / nu) to t with Satterthwaite's df(W), so the critical value
    is t_{1-level/2, df(W)} * sqrt(se_study^2 + se_seed^2 W / nu). With ``seed_df`` 0 (one seed per arm)
    the test leaves the seed part out: z_{1-level/2} * se_study.
    """
    var_study = se_study**2
    if seed_df <= 0 or se_seed == 0:
        return np.array([norm.ppf(1 - level / 2) * math.sqrt(var_study)])
    w = chi2.ppf((np.arange(POWER_NODES) + 0.5) / POWER_NODES, seed_df)
    var_seed = se_seed**2 * w / seed_df
    with np.errstate(divide="ignore"):
        df = np.where(var_seed > 0, (var_study + var_seed) ** 2 / (var_seed**2 / seed_df), np.inf)
    return t_dist.ppf(1 - level / 2, df) * np.sqrt(var_study + var_seed)


def _power_at(delta: float, critical: np.ndarray, sd: float) -> float:
    if sd == 0:
        return float(np.mean(abs(delta) > critical))
    return float(np.mean(norm.cdf((delta - critical) / sd) + norm.cdf((-delta - critical) / sd)))


def seed_arm_power(delta, se_study, se_seed=0.0, seed_df: int = 0, alpha: float = 0.05, tests: int = 1) -> float:
    """Power of seed_arm_test at level alpha / ``tests`` (Holm's first step) against a true difference ``delta``.

    The model is the test's own: the observed difference is delta + e, e ~ N(0, se_study^2 + se_seed^2)
    (se_study: the study part, which the test takes as known from DeLong; se_seed = seed SD x
    sqrt(1/k_a + 1/k_b)); the seed variance is estimated on ``seed_df`` = k_a + k_b - 2 degrees of
    freedom (a chi-square independent of e) and the statistic is referred to t with Satterthwaite's
    df, as seed_arm_test does. The expectation over the estimated seed variance is an average over
    POWER_NODES equal-probability nodes. ``seed_df`` 0: one seed per arm, the test run is study-only
    (z at se_study) while the difference still varies by se_seed.
    """
    critical = _critical(float(se_study), float(se_seed), int(seed_df), alpha / max(tests, 1))
    return _power_at(float(delta), critical, math.hypot(se_study, se_seed))


def smallest_detectable(
    se_study, se_seed=0.0, seed_df=0, alpha: float = 0.05, tests: int = 1, power: float = 0.8
) -> np.ndarray:
    """|delta| at which seed_arm_test, at level alpha / ``tests`` (Holm's first step), has ``power`` (seed_arm_power).

    The test actually run: t quantiles at its Satterthwaite df when the seed part is estimated
    (``seed_df`` > 0), so with 2 seeds per arm the figure is far above the normal rule; with no seed
    part (``se_seed`` 0) it is the z rule (z_{1-alpha/2tests} + z_power) * se_study, 2.80 x SE for one
    test. Holm's later steps are less strict, so the figure is an upper bound for them. Element-wise
    over arrays (NaN where an input is NaN).
    """
    se_study, se_seed, seed_df = np.broadcast_arrays(
        np.asarray(se_study, float), np.asarray(se_seed, float), np.asarray(seed_df, float)
    )
    out = np.full(se_study.shape, np.nan)
    for i in np.ndindex(se_study.shape):
        a, b, nu = se_study[i], se_seed[i], seed_df[i]
        if not (np.isfinite(a) and np.isfinite(b) and np.isfinite(nu)):
            continue
        sd = math.hypot(a, b)
        if sd == 0:
            out[i] = 0.0
            continue
        critical = _critical(a, b, int(nu), alpha / max(tests, 1))
        high = sd
        while _power_at(high, critical, sd) < power:
            high *= 2
        out[i] = brentq(lambda d: _power_at(d, critical, sd) - power, 0.0, high, xtol=1e-12 * sd, rtol=1e-12)
    return out if out.ndim else float(out)


def seed_arm_test(y, runs_a, runs_b, groups=None, level: float = 0.95) -> dict:
    """Seed-averaged AUROC(b) - AUROC(a) with a variance for studies AND seeds (t p-value and interval).

    var = c' Cov c + s2 (1/k_a + 1/k_b): the first term is DeLong's covariance of all k_a + k_b
    runs on the same studies with the contrast c of the two seed means (study sampling, models
    held fixed); the second is the seed-to-seed variance of AUROC on these studies pooled over both
    arms (training noise; law of total variance). s2 on fixed studies also holds some study noise,
    so the sum leans conservative. The rest is seed_arm_statistic() on the runs' AUROCs.
    """
    runs_a, runs_b = np.atleast_2d(runs_a), np.atleast_2d(runs_b)
    k_a = len(runs_a)
    auc, cov = delong_cov(y, np.vstack([runs_a, runs_b]), groups)
    c = np.r_[np.full(k_a, -1.0 / k_a), np.full(len(runs_b), 1.0 / len(runs_b))]
    return seed_arm_statistic(auc[:k_a], auc[k_a:], max(float(c @ cov @ c), 0.0), level)


def seed_arm_statistic(auc_a, auc_b, var_study: float, level: float = 0.95) -> dict:
    """The decision of seed_arm_test from the runs' AUROCs and the study part of the variance.

    z = (mean(b) - mean(a)) / sqrt(var_study + s2 (1/k_a + 1/k_b)), s2 the seed variance pooled over
    both arms on k_a + k_b - 2 df (``seed_df``). p refers z to Student's t with Satterthwaite's df
    (``df``; the study part counted as known), since 2-3 seeds per arm estimate s2 on few degrees of
    freedom; ``ci_low``/``ci_high`` are the interval of the same test, delta -/+ t_{(1+level)/2, df} se,
    so it excludes 0 exactly when p < 1 - level. With one seed per arm s2 is unknown: the test is
    study-only (normal p and interval, ``seed_df`` 0; say so).
    """
    auc_a, auc_b = np.asarray(auc_a, float), np.asarray(auc_b, float)
    k_a, k_b = len(auc_a), len(auc_b)
    df = (k_a - 1) + (k_b - 1)
    pooled = ((k_a - 1) * _var(auc_a) + (k_b - 1) * _var(auc_b)) / df if df else 0.0
    var_seed = pooled * (1 / k_a + 1 / k_b)
    out = _z_result(float(auc_b.mean() - auc_a.mean()), math.sqrt(var_study + var_seed))
    # Few seeds estimate s2 poorly: refer z to a t with Satterthwaite's df (study part taken as known)
    eff_df = (var_study + var_seed) ** 2 / (var_seed**2 / df) if df and var_seed > 0 else math.inf
    if math.isfinite(eff_df) and math.isfinite(out["z"]):
        out["p_value"] = float(2 * t_dist.sf(abs(out["z"]), eff_df))
    half = float(t_dist.ppf((1 + level) / 2, eff_df)) * out["se"]
    return out | {
        "df": eff_df,
        "ci_low": out["delta"] - half,
        "ci_high": out["delta"] + half,
        "mean_a": float(auc_a.mean()),
        "sd_a": _sd(auc_a),
        "mean_b": float(auc_b.mean()),
        "sd_b": _sd(auc_b),
        "se_study": math.sqrt(var_study),
        "se_seed": math.sqrt(var_seed),
        "seed_df": df,
    }


def _var(values) -> float:
    return float(np.var(values, ddof=1)) if len(values) > 1 else 0.0


def _sd(values) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else math.nan


def hierarchical_deltas(y, runs_a, runs_b, counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap replicates of mean AUROC(b seeds) - mean AUROC(a seeds), resampling patients AND seeds.

    ``counts`` (resamples x studies) are patient resamples shared by every run (so the pairing of
    the two arms on the same patients is kept); in each resample each arm's seeds are also drawn
    with replacement. Patients and seeds are crossed factors (every seed scores every patient);
    resampling both at once is the two-way ("pigeonhole") bootstrap, which Owen (2007, Annals of
    Applied Statistics 1:386-411) shows is mildly conservative for crossed random effects, i.e. it
    does not understate the noise from either source. With k seeds the seed part is biased low by
    (k-1)/k, a reason to report the DeLong+seed test beside it. NaN where a resample has one class.
    """

    runs_a, runs_b = np.atleast_2d(runs_a), np.atleast_2d(runs_b)
    auc_a = np.stack([weighted_auroc_ap(y, s, counts)[0] for s in runs_a], axis=1)  # (R, k_a)
    auc_b = np.stack([weighted_auroc_ap(y, s, counts)[0] for s in runs_b], axis=1)
    rows = np.arange(len(counts))[:, None]
    pick_a = rng.integers(0, len(runs_a), size=(len(counts), len(runs_a)))
    pick_b = rng.integers(0, len(runs_b), size=(len(counts), len(runs_b)))
    return auc_b[rows, pick_b].mean(axis=1) - auc_a[rows, pick_a].mean(axis=1)


# ----------------------------------------------------------------------------------------------
# Coverage simulation (binormal scores; vectorised over data sets)


def binormal_auroc_shift(auroc: float) -> float:
    """Mean shift d of N(d, 1) positives over N(0, 1) negatives with AUROC = Phi(d / sqrt 2)."""
    return math.sqrt(2) * float(norm.ppf(auroc))


def coverage(
    auroc: float, positives: int, negatives: int, data_sets: int = 2000, seed: int = 0, level: float = 0.95
) -> float:
    """Share of ``data_sets`` simulated binormal data sets whose auroc_interval() holds the true AUROC.

    Vectorised: the placements of all data sets come from one midrank call per class, and the
    interval is the same formula as auroc_interval() (checked against it in the tests).
    """
    rng = np.random.default_rng(seed)
    m, n = positives, negatives
    y = np.r_[np.ones(m, bool), np.zeros(n, bool)]
    scores = rng.normal(size=(data_sets, m + n)) + binormal_auroc_shift(auroc) * y
    v10, v01, auc = placements(y, scores)
    var = v10.var(axis=1, ddof=1) / m + v01.var(axis=1, ddof=1) / n  # DeLong, as delong_cov without groups
    low, high = logit_interval(auc, var, m, n, level)
    return float(np.mean((low <= auroc) & (auroc <= high)))


def weighted_auroc_ap(y: np.ndarray, s: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUROC and AP for each row of ``weights`` (resample counts), NaN where a resample has one class.

    AUROC is the Mann-Whitney statistic with average ranks for ties, i.e. P(s+ > s-) + P(s+ = s-)/2,
    summed over tied-score blocks; AP is sklearn's step sum over distinct thresholds, sum dR * precision.
    """
    y = np.asarray(y).astype(bool)
    weights = np.atleast_2d(np.asarray(weights, float))
    if not len(y):
        return np.full(len(weights), np.nan), np.full(len(weights), np.nan)
    order = np.argsort(s, kind="stable")
    s_sorted, y_sorted, w = np.asarray(s)[order], y[order], weights[:, order]
    starts = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]])  # blocks of tied scores
    pos = np.add.reduceat(w * y_sorted, starts, axis=1)  # (resamples x blocks) weights
    neg = np.add.reduceat(w * ~y_sorted, starts, axis=1)
    n_pos, n_neg = pos.sum(axis=1), neg.sum(axis=1)
    neg_below = np.cumsum(neg, axis=1) - neg  # negatives with a strictly lower score
    pos_at_or_above = n_pos[:, None] - (np.cumsum(pos, axis=1) - pos)
    neg_at_or_above = n_neg[:, None] - neg_below
    with np.errstate(divide="ignore", invalid="ignore"):
        auroc = (pos * (neg_below + 0.5 * neg)).sum(axis=1) / (n_pos * n_neg)
        taken = pos_at_or_above + neg_at_or_above
        precision = np.where(taken > 0, pos_at_or_above / np.where(taken > 0, taken, 1), 0.0)
        ap = (pos * precision).sum(axis=1) / n_pos
    one_class = (n_pos == 0) | (n_neg == 0)
    auroc[one_class], ap[one_class] = np.nan, np.nan
    return auroc, ap


# ---- agreement between raters ---------------------------------------------------------------


def binary_kappa(a, b, weights=None) -> np.ndarray:
    """Cohen's kappa of two 0/1 raters, once per row of ``weights`` (resample counts; default: one row of ones).

    From the weighted 2x2 table: p_o = agreement share, p_e = sum over the two classes of the product
    of the raters' marginal shares; kappa = (p_o - p_e) / (1 - p_e), NaN where p_e is 1 (both raters
    constant and equal). With unit weights it equals sklearn.metrics.cohen_kappa_score.
    """
    a, b = np.asarray(a).astype(bool), np.asarray(b).astype(bool)
    w = np.ones((1, len(a))) if weights is None else np.asarray(weights, float)
    n = w.sum(axis=1)
    both, neither = w @ (a & b), w @ (~a & ~b)
    a_pos, b_pos = w @ a, w @ b
    p_o = (both + neither) / n
    p_e = (a_pos * b_pos + (n - a_pos) * (n - b_pos)) / n**2
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(np.isclose(p_e, 1.0), np.nan, (p_o - p_e) / (1 - p_e))


def fleiss_kappa(counts, weights=None) -> np.ndarray:
    """Fleiss' kappa (Fleiss 1971, Psychological Bulletin 76:378-382) of a subjects x categories table of
    rating counts, every subject rated by the same number of raters; once per row of ``weights``.

    P_i = (sum_j n_ij^2 - n) / (n (n - 1)) is subject i's pairwise agreement, p_j the share of all
    ratings in category j; kappa = (mean P_i - sum_j p_j^2) / (1 - sum_j p_j^2), NaN when every
    rating falls in one category.
    """
    table = np.asarray(counts, float)
    raters = table.sum(axis=1)
    if table.ndim != 2 or not len(table) or not np.allclose(raters, raters[0]) or raters[0] < 2:
        raise ValueError("fleiss_kappa needs a subjects x categories table with the same number (>= 2) of raters")
    n = raters[0]
    w = np.ones((1, len(table))) if weights is None else np.asarray(weights, float)
    agreement = ((table**2).sum(axis=1) - n) / (n * (n - 1))
    total = w.sum(axis=1)
    p_bar = (w @ agreement) / total
    p_j = (w @ table) / (n * total[:, None])
    p_e = (p_j**2).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(np.isclose(p_e, 1.0), np.nan, (p_bar - p_e) / (1 - p_e))
