"""AUROC and average precision per observation (scikit-learn), NaN with a reason when undefined.

Small samples are shown honestly: every value comes with its positive and negative counts, no
interval is given below CI_MIN_POSITIVES in the smaller class, and below POINT_MIN_POSITIVES the
value itself is "n/a". The AUROC interval is a logit-scale DeLong interval clustered by patient
(chexutils.scoring.stats; its coverage is simulated in the tests). AP intervals and the 5-task mean use
the bootstrap: every resample is a row of a (resamples x studies) count matrix, and the metrics
for all resamples are computed at once as weighted statistics over the sorted scores.
"""

import math
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

from chexutils.core.io import write_json, write_table
from chexutils.core.labels import COMPETITION_TASKS, certain_only
from chexutils.scoring.stats import auroc_interval, weighted_auroc_ap

BOOTSTRAP_COLUMNS = (
    "auroc",
    "ci_low",
    "ci_high",
    "ap",
    "ap_low",
    "ap_high",
    "n",
    "positives",
    "negatives",
    "patients",
    "positive_patients",
    "negative_patients",
    "shown",
    "note",
)

# Floors on the smaller class (positives, or negatives where those are fewer). At 10 the logit
# DeLong interval covers >= 90% for true AUROC 0.6-0.95 (tests/test_stats.py simulates it; the
# percentile bootstrap gave 88% at AUROC 0.9). Below 3, one study decides at least half of the
# value (with 2 positives, one moving from top to bottom shifts AUROC by 0.5), so it is "n/a".
# Clustered by patient, the CI floor counts patients (the unit the interval resamples): with
# 10-14 positive studies of 5-6 patients the study-counted interval covered only 86-89%
# (tests/test_metrics.py::test_printed_clustered_interval_covers_and_counts_patients_at_the_floor).
CI_MIN_POSITIVES = 10
POINT_MIN_POSITIVES = 3
FEW = "few positives"
NA = "n/a"


def shown(positives: int, negatives: int, positive_units=None, negative_units=None) -> str:
    """How a metric on this many positives/negatives is shown: 'with CI', 'few positives' (no CI) or 'n/a'.

    The CI floor counts what the interval resamples: with ``positive_units`` / ``negative_units``
    (patients with a positive / negative study, where the interval is clustered by patient) it
    counts those, so 12 positive studies of 5 patients get no CI; the 'n/a' floor counts studies.
    """
    smaller = min(positives, negatives)
    units = min(
        positives if not _known(positive_units) else int(positive_units),
        negatives if not _known(negative_units) else int(negative_units),
    )
    few = FEW if positives <= negatives else "few negatives"
    if smaller < POINT_MIN_POSITIVES:
        return NA
    return "with CI" if units >= CI_MIN_POSITIVES and smaller >= CI_MIN_POSITIVES else few


def metric_text(
    value, low, high, positives: int, negatives: int, patients=None, positive_patients=None, negative_patients=None
) -> str:
    """'0.812 (0.743–0.866) [23+ 177−; 150 pt]', '0.640 few positives [5+ 195−]' or 'n/a [1+ 199−]'.

    With ``positive_patients`` / ``negative_patients`` the CI floor counts patients (see shown()).
    """
    counts = f"[{int(positives)}+ {int(negatives)}−" + (f"; {int(patients)} pt]" if _known(patients) else "]")
    how = shown(int(positives), int(negatives), positive_patients, negative_patients)
    if how == NA or not _known(value):
        return f"{NA} {counts}"
    if how.startswith("few") or not (_known(low) and _known(high)):
        return f"{value:.3f} {how if how.startswith('few') else ''} {counts}".replace("  ", " ")
    return f"{value:.3f} ({low:.3f}–{high:.3f}) {counts}"


def _known(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


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


def percentile_interval(values: np.ndarray, level: float) -> tuple[float, float]:
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


def bootstrap_auroc(
    labels: pd.DataFrame,
    scores: pd.DataFrame,
    n_resamples: int = 1000,
    seed: int = 0,
    groups: pd.Series | None = None,
    level: float = 0.95,
) -> pd.DataFrame:
    """Per observation: AUROC and AP (equal to sklearn) with CIs, counts, how to show it, and a note.

    AUROC CI: logit DeLong interval (stats.auroc_interval), clustered by ``groups`` (study -> e.g.
    patient) when given. AP CI: percentile bootstrap of studies, or whole groups; the same
    resamples serve every observation. No CI below CI_MIN_POSITIVES in the smaller class (``shown``
    says 'few positives' or 'n/a'; ``note`` says why). Uncertain (-1) labels are left out per
    observation; one class overall gives NaN throughout with the reason in ``note``.
    """
    scores = _aligned(labels, scores, labels.columns)
    group_keys = _groups_for(labels, groups)
    counts = resample_counts(len(labels), n_resamples, seed, group_keys)
    rows = {}
    for obs in labels.columns:
        y, s, _, ap = _replicates(labels[obs], scores[obs], counts)
        _, keep = certain_only(labels[obs])
        keep &= predicted(scores[obs])
        row = dict.fromkeys(BOOTSTRAP_COLUMNS, math.nan) | {
            "n": len(y),
            "positives": int(y.sum()),
            "negatives": int(len(y) - y.sum()),
        }
        if group_keys is not None:
            row["patients"] = len(set(group_keys[keep]))
            row["positive_patients"] = len(set(group_keys[keep][y == 1]))
            row["negative_patients"] = len(set(group_keys[keep][y == 0]))
        row["shown"] = shown(row["positives"], row["negatives"], row["positive_patients"], row["negative_patients"])
        row["note"] = one_class_note(y) if predicted(scores[obs]) else NOT_PREDICTED
        if not row["note"]:
            row["auroc"], row["ap"] = float(roc_auc_score(y, s)), float(average_precision_score(y, s))
            if row["shown"] == "with CI":
                interval = auroc_interval(y, s, None if group_keys is None else group_keys[keep], level)
                row["ci_low"], row["ci_high"] = interval["ci_low"], interval["ci_high"]
                row["ap_low"], row["ap_high"] = percentile_interval(ap, level)
                row["note"] = _dropped_note(ap)
            else:
                row["note"] = _no_ci_note(row)
        rows[obs] = row
    table = pd.DataFrame.from_dict(rows, orient="index", columns=list(BOOTSTRAP_COLUMNS))
    table.index.name = "observation"
    return table


def _patient_counts(labels: pd.Series, scores: pd.Series, group_keys) -> tuple[int, int] | None:
    """(patients with a positive, with a negative certain study) of one observation; None without groups."""
    if group_keys is None:
        return None
    y, keep = certain_only(labels)
    keep &= predicted(scores)
    keys, y = group_keys[keep], y[keep].astype(bool)
    return len(set(keys[y])), len(set(keys[~y]))


def _no_ci_note(row: dict) -> str:
    """Why a row gets no CI: too few studies, or (clustered) too few patients, in the smaller class."""
    smaller = min(row["positives"], row["negatives"])
    if smaller < CI_MIN_POSITIVES or not _known(row.get("positive_patients")):
        return f"no CI: {smaller} in the smaller class < {CI_MIN_POSITIVES}"
    units = min(row["positive_patients"], row["negative_patients"])
    return f"no CI: {units} patients in the smaller class < {CI_MIN_POSITIVES} (the interval resamples patients)"


def mean_tasks_with_ci(
    labels: pd.DataFrame,
    scores: pd.DataFrame,
    tasks=COMPETITION_TASKS,
    n_resamples: int = 1000,
    seed: int = 0,
    groups: pd.Series | None = None,
    level: float = 0.95,
    min_positives: int = CI_MIN_POSITIVES,
) -> dict:
    """Mean AUROC over the ``tasks`` with >= ``min_positives`` in the smaller class, with a percentile CI.

    With ``groups`` (patients, resampled whole) the floor also counts patients with a positive and
    with a negative study, as bootstrap_auroc's does.

    ``tasks`` lists the tasks used, ``left_out`` the others with their counts (the mean is of fewer
    than 5 tasks then, and says so); the CI is the percentile interval of the mean per resample
    (same resamples for all tasks), dropping resamples where a task has one class (``dropped``).
    """
    labels = labels[list(tasks)]
    scores = _aligned(labels, scores, list(tasks))
    table = per_observation(labels, scores)
    smaller = np.minimum(table["positives"].astype(int), (table["n"] - table["positives"]).astype(int))
    group_keys = _groups_for(labels, groups)
    units = {t: _patient_counts(labels[t], scores[t], group_keys) for t in tasks}  # (pos, neg) patients or None
    used = [t for t in tasks if smaller[t] >= min_positives and (units[t] is None or min(units[t]) >= min_positives)]
    left_out = {
        t: f"{int(table.loc[t, 'positives'])} positives, {int(table.loc[t, 'n'] - table.loc[t, 'positives'])} "
        + (
            f"negatives; {units[t][0]} / {units[t][1]} patients with a positive / negative study"
            if units[t] is not None
            else "negatives"
        )
        + f" (< {min_positives})"
        for t in tasks
        if t not in used
    }
    out = {
        "mean": math.nan,
        "ci_low": math.nan,
        "ci_high": math.nan,
        "dropped": 0,
        "tasks": used,
        "left_out": left_out,
        "label": f"mean of {len(used)} of {len(tasks)} tasks",
    }
    if not used:
        return out
    counts = resample_counts(len(labels), n_resamples, seed, group_keys)
    per_task = np.stack([_replicates(labels[t], scores[t], counts)[2] for t in used])
    means = per_task.mean(axis=0)
    out["ci_low"], out["ci_high"] = percentile_interval(means, level)
    out["mean"] = mean_task_auroc(table, used)
    out["dropped"] = int(np.isnan(means).sum())
    if len(used) == 1:  # one task: its own logit DeLong interval (the percentile bootstrap undercovers)
        keep = labels[used[0]].fillna(0.0).to_numpy() != -1.0
        y, s = certain_scores(labels[used[0]], scores[used[0]])
        interval = auroc_interval(y, s, None if group_keys is None else group_keys[keep], level)
        out["ci_low"], out["ci_high"] = interval["ci_low"], interval["ci_high"]
    return out


def _paired_one(labels: pd.Series, a: pd.Series, b: pd.Series, counts: np.ndarray, level: float) -> dict:
    """Paired bootstrap of AUROC(a) - AUROC(b) for one observation."""
    y, s_a, auroc_a, _ = _replicates(labels, a, counts)
    _, s_b, auroc_b, _ = _replicates(labels, b, counts)
    out = {
        "delta": math.nan,
        "ci_low": math.nan,
        "ci_high": math.nan,
        "p_value": math.nan,
        "n": len(y),
        "note": one_class_note(y),
    }
    if out["note"]:
        return out
    out["delta"] = float(roc_auc_score(y, s_a) - roc_auc_score(y, s_b))
    deltas = auroc_a - auroc_b
    out["ci_low"], out["ci_high"] = percentile_interval(deltas, level)
    out["note"] = _dropped_note(deltas)
    finite = deltas[np.isfinite(deltas)]
    if len(finite):
        two_sided = 2 * min(np.mean(finite <= 0), np.mean(finite >= 0))
        out["p_value"] = float(np.clip(two_sided, 1 / (len(finite) + 1), 1.0))
    return out


def paired_bootstrap(
    labels: pd.DataFrame,
    scores_a: pd.DataFrame,
    scores_b: pd.DataFrame,
    observation: str | None,
    n_resamples: int = 2000,
    seed: int = 0,
    groups: pd.Series | None = None,
    level: float = 0.95,
):
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
