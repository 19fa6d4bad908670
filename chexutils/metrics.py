"""AUROC and average precision per observation (scikit-learn), NaN with a reason when undefined.

Bootstrap confidence intervals resample studies (or whole patients) with replacement. Every
resample is a row of a (resamples x studies) count matrix, and the metrics for all resamples are
computed at once as weighted statistics over the sorted scores, so 1,000 resamples cost about as
much as a handful of sklearn calls.
"""

import math
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

from .io import write_json, write_table
from .labels import COMPETITION_TASKS, certain_only

BOOTSTRAP_COLUMNS = ("auroc", "ci_low", "ci_high", "ap", "ap_low", "ap_high", "n", "positives", "note")


NOT_PREDICTED = "not predicted by this model (all scores NaN)"


def predicted(scores) -> bool:
    """False for an observation the model does not predict (an imported checkpoint writes NaN for it)."""
    return not np.isnan(np.asarray(scores, float)).all()


def certain_scores(labels: pd.Series, scores: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """The entries with a certain label: 1 positive, 0 negative or blank (uncertain left out); none if not predicted."""
    y, keep = certain_only(labels)
    keep &= predicted(scores)
    return y[keep].astype(int), scores.to_numpy()[keep]


def per_observation(labels: pd.DataFrame, scores: pd.DataFrame) -> pd.DataFrame:
    """One row per observation: n, positives, AUROC, AP, and why a metric is NaN when it is."""
    rows = {}
    for obs in labels.columns:
        y, s = certain_scores(labels[obs], scores[obs])
        row = {"n": len(y), "positives": int(y.sum()), "auroc": np.nan, "ap": np.nan, "note": one_class_note(y)}
        if not predicted(scores[obs]):
            row["note"] = NOT_PREDICTED
        if not row["note"]:
            row["auroc"] = roc_auc_score(y, s)
            row["ap"] = average_precision_score(y, s)
        rows[obs] = row
    return pd.DataFrame(rows).T


def mean_task_auroc(table: pd.DataFrame, tasks=COMPETITION_TASKS) -> float:
    """Mean AUROC over the competition tasks (NaN if any is undefined)."""
    return float(table.loc[list(tasks), "auroc"].astype(float).mean(skipna=False))


# ----------------------------------------------------------------------------------------------
# Vectorised bootstrap


def resample_counts(n_rows: int, n_resamples: int, seed: int = 0, groups=None) -> np.ndarray:
    """(resamples x rows) int counts: how often each row is drawn; with ``groups``, whole groups are drawn.

    ``groups`` holds one group key per row (e.g. the patient); G groups are drawn with replacement
    G times and every row of a drawn group gets that group's count, so a group is all in or all out.
    """
    rng = np.random.default_rng(seed)
    if groups is None:
        codes, n_units = np.arange(n_rows), n_rows
    else:
        codes, uniques = pd.factorize(np.asarray(groups), use_na_sentinel=False)
        if len(codes) != n_rows:
            raise ValueError(f"groups has {len(codes)} entries for {n_rows} rows")
        n_units = len(uniques)
    draws = rng.integers(0, n_units, size=(n_resamples, n_units))
    offsets = (np.arange(n_resamples) * n_units)[:, None]
    counts = np.bincount((draws + offsets).ravel(), minlength=n_resamples * n_units)
    return counts.reshape(n_resamples, n_units)[:, codes]


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
    pos = np.add.reduceat(w * y_sorted, starts, axis=1)          # (resamples x blocks) weights
    neg = np.add.reduceat(w * ~y_sorted, starts, axis=1)
    n_pos, n_neg = pos.sum(axis=1), neg.sum(axis=1)
    neg_below = np.cumsum(neg, axis=1) - neg                    # negatives with a strictly lower score
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


def _aligned(labels: pd.DataFrame, scores: pd.DataFrame, columns) -> pd.DataFrame:
    """``scores`` keyed like ``labels`` (by study and observation name, never by position)."""
    missing_rows = labels.index.difference(scores.index)
    missing_cols = [c for c in columns if c not in scores.columns]
    if len(missing_rows) or missing_cols:
        raise KeyError(f"scores lack studies {list(missing_rows[:5])} / observations {missing_cols}")
    return scores.loc[labels.index, list(columns)]


def _groups_for(labels: pd.DataFrame, groups) -> np.ndarray | None:
    """One group key per study of ``labels`` (looked up by study), or None."""
    if groups is None:
        return None
    keyed = groups.reindex(labels.index)
    if keyed.isna().any():
        raise KeyError(f"groups lack studies {list(labels.index[keyed.isna().to_numpy()][:5])}")
    return keyed.to_numpy()


def _replicates(labels: pd.Series, scores: pd.Series, counts: np.ndarray):
    """(y, s, AUROC per resample, AP per resample) for one observation, uncertain entries left out."""
    y, keep = certain_only(labels)
    keep &= predicted(scores)  # an observation the model does not predict: no entries
    s = scores.to_numpy(float)[keep]
    if not np.isfinite(s).all():
        raise ValueError(f"{labels.name!r}: scores must be finite where the label is certain")
    return (y[keep].astype(int), s, *weighted_auroc_ap(y[keep], s, counts[:, keep]))


def one_class_note(y: np.ndarray) -> str:
    """Why AUROC/AP are undefined on labels ``y``, or '' if both classes are present."""
    positives = int(y.sum())
    return "" if 0 < positives < len(y) else f"only one class present ({positives} positive of {len(y)})"


def _percentiles(values: np.ndarray, level: float) -> tuple[float, float]:
    """Percentile interval of the finite values (NaN, NaN if none)."""
    finite = values[np.isfinite(values)]
    if not len(finite):
        return math.nan, math.nan
    low, high = np.quantile(finite, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def _dropped_note(values: np.ndarray) -> str:
    """How many resamples had one class (and so no value), '' if none."""
    dropped = int(np.isnan(values).sum())
    return f"{dropped} of {len(values)} resamples dropped (one class)" if dropped else ""


def bootstrap_auroc(labels: pd.DataFrame, scores: pd.DataFrame, n_resamples: int = 1000, seed: int = 0,
                    groups: pd.Series | None = None, level: float = 0.95) -> pd.DataFrame:
    """Per observation: AUROC and AP (equal to sklearn) with percentile bootstrap CIs, n, positives, note.

    Studies (rows) are resampled, or whole groups when ``groups`` (study -> e.g. patient) is given;
    the same resamples serve every observation. Uncertain (-1) labels are left out per observation.
    Resamples with one class are dropped from the CI (``note`` counts them); an observation with one
    class overall is NaN throughout with the reason in ``note``.
    """
    scores = _aligned(labels, scores, labels.columns)
    counts = resample_counts(len(labels), n_resamples, seed, _groups_for(labels, groups))
    rows = {}
    for obs in labels.columns:
        y, s, auroc, ap = _replicates(labels[obs], scores[obs], counts)
        row = dict.fromkeys(BOOTSTRAP_COLUMNS, math.nan) | {"n": len(y), "positives": int(y.sum())}
        row["note"] = one_class_note(y) if predicted(scores[obs]) else NOT_PREDICTED
        if not row["note"]:
            row["auroc"], row["ap"] = float(roc_auc_score(y, s)), float(average_precision_score(y, s))
            row["ci_low"], row["ci_high"] = _percentiles(auroc, level)
            row["ap_low"], row["ap_high"] = _percentiles(ap, level)
            row["note"] = _dropped_note(auroc)
        rows[obs] = row
    table = pd.DataFrame.from_dict(rows, orient="index", columns=list(BOOTSTRAP_COLUMNS))
    table.index.name = "observation"
    return table


def mean_tasks_with_ci(labels: pd.DataFrame, scores: pd.DataFrame, tasks=COMPETITION_TASKS,
                       n_resamples: int = 1000, seed: int = 0, groups: pd.Series | None = None,
                       level: float = 0.95) -> dict:
    """Mean AUROC over ``tasks`` with a percentile CI from the mean per resample (same resamples for all).

    A resample where any task has one class is dropped (``dropped`` counts them); the mean is NaN if
    any task is undefined on the full data.
    """
    tasks = list(tasks)
    labels = labels[tasks]
    scores = _aligned(labels, scores, tasks)
    counts = resample_counts(len(labels), n_resamples, seed, _groups_for(labels, groups))
    per_task = np.stack([_replicates(labels[t], scores[t], counts)[2] for t in tasks])
    means = per_task.mean(axis=0)
    low, high = _percentiles(means, level)
    mean = mean_task_auroc(per_observation(labels, scores), tasks)
    if math.isnan(mean):
        low = high = math.nan
    return {"mean": mean, "ci_low": low, "ci_high": high, "dropped": int(np.isnan(means).sum())}


def _paired_one(labels: pd.Series, a: pd.Series, b: pd.Series, counts: np.ndarray, level: float) -> dict:
    """Paired bootstrap of AUROC(a) - AUROC(b) for one observation."""
    y, s_a, auroc_a, _ = _replicates(labels, a, counts)
    _, s_b, auroc_b, _ = _replicates(labels, b, counts)
    out = {"delta": math.nan, "ci_low": math.nan, "ci_high": math.nan, "p_value": math.nan,
           "n": len(y), "note": one_class_note(y)}
    if out["note"]:
        return out
    out["delta"] = float(roc_auc_score(y, s_a) - roc_auc_score(y, s_b))
    deltas = auroc_a - auroc_b
    out["ci_low"], out["ci_high"] = _percentiles(deltas, level)
    out["note"] = _dropped_note(deltas)
    finite = deltas[np.isfinite(deltas)]
    if len(finite):
        two_sided = 2 * min(np.mean(finite <= 0), np.mean(finite >= 0))
        out["p_value"] = float(np.clip(two_sided, 1 / (len(finite) + 1), 1.0))
    return out


def paired_bootstrap(labels: pd.DataFrame, scores_a: pd.DataFrame, scores_b: pd.DataFrame,
                     observation: str | None, n_resamples: int = 2000, seed: int = 0,
                     groups: pd.Series | None = None, level: float = 0.95):
    """AUROC(a) - AUROC(b) on the same studies and resamples: delta, CI, two-sided p-value, n.

    p = 2 * min(P(delta* <= 0), P(delta* >= 0)) over the finite bootstrap deltas, clipped to
    [1/(R+1), 1]: the share of resamples on the far side of zero, doubled; R resamples cannot
    resolve a p below 1/(R+1), so it is never reported as 0. Identical scores give delta 0, p 1.
    With ``observation=None``, a DataFrame with one row per observation (same resamples for all).
    """
    columns = [observation] if observation is not None else list(labels.columns)
    labels = labels[columns]
    scores_a, scores_b = _aligned(labels, scores_a, columns), _aligned(labels, scores_b, columns)
    counts = resample_counts(len(labels), n_resamples, seed, _groups_for(labels, groups))
    rows = {obs: _paired_one(labels[obs], scores_a[obs], scores_b[obs], counts, level) for obs in columns}
    if observation is not None:
        return rows[observation]
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "observation"
    return table


# ----------------------------------------------------------------------------------------------
# Writing


def write_metrics(table: pd.DataFrame, summary: dict, json_path) -> tuple[Path, Path]:
    """Write ``json_path`` (per-observation dicts + summary, NaN as null) and the same name as a tidy .csv."""
    json_path = Path(json_path)
    table = table.copy()
    table.index.name = table.index.name or "observation"
    observations = {str(obs): row for obs, row in table.to_dict(orient="index").items()}
    payload = {"observations": observations, "summary": summary}
    write_json(json_path, payload)
    csv_path = write_table(table, json_path.with_suffix(".csv"))
    return json_path, csv_path
