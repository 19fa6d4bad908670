"""A model against radiologists on the official test set, the way the CheXpert paper and leaderboard do.

Per observation: each benchmark radiologist's operating point against the reference (sensitivity and
1 - specificity with Wilson intervals), whether it lies **on or below the model's ROC curve**, and the
model's sensitivity at the radiologist's specificity (and specificity at their sensitivity) with a
paired bootstrap over patients. The leaderboard's figure of merit is the number of radiologists on or
below the curve, averaged over the 5 competition tasks.

"On or below the curve" (the leaderboard's rule): the model's ROC curve is drawn through its
(FP, TP) count points, one per distinct score (tied scores make one diagonal step), joined by
straight lines; at the reader's FPR = fp / (fp + tn) the curve's height is the **top** of any
vertical run there; the reader counts when that height is at least their TPR = tp / (tp + fn).
A reader exactly on the curve counts: the public leaderboard's "Num Rads Below Curve" is only
reproduced that way (one example model's reader sits exactly on a flat stretch of its curve). All of
it is computed from integer counts in exact rational arithmetic, never from ``1 - specificity`` in
floating point, which can land a hair left of a vertical run and read its bottom instead of its top.
"Sensitivity at the reader's specificity" is that of a real threshold: the highest TPR among the
model's thresholds whose specificity is at least the reader's (no interpolation).
"""

import bisect
import math
from fractions import Fraction

import numpy as np
import pandas as pd

from chexutils.core.io import json_ready, write_json, write_table
from chexutils.core.labels import COMPETITION_TASKS
from chexutils.core.rundir import OFFICIAL_TEST, RunDir
from chexutils.scoring.metrics import (
    bootstrap_auroc,
    mean_tasks_with_ci,
    percentile_interval,
    resample_counts,
    write_metrics,
)
from chexutils.scoring.stats import wilson_interval

READER_COLUMNS = (
    "observation",
    "reader",
    "tp",
    "fp",
    "tn",
    "fn",
    "sensitivity",
    "sens_low",
    "sens_high",
    "specificity",
    "spec_low",
    "spec_high",
    "ppv",
    "below_curve",
    "model_tpr_at_reader_fpr",
    "model_sens_at_reader_spec",
    "model_sens_low",
    "model_sens_high",
    "sens_delta",
    "sens_delta_low",
    "sens_delta_high",
    "model_spec_at_reader_sens",
    "model_spec_low",
    "model_spec_high",
    "spec_delta",
    "spec_delta_low",
    "spec_delta_high",
    "positives",
    "n",
)


def operating_point(reference, reads, level: float = 0.95) -> dict:
    """A reader's confusion counts against the reference (both 0/1 arrays), sensitivity / specificity / PPV with Wilson CIs."""
    y, r = np.asarray(reference).astype(bool), np.asarray(reads).astype(bool)
    tp, fn = int((y & r).sum()), int((y & ~r).sum())
    fp, tn = int((~y & r).sum()), int((~y & ~r).sum())
    sens = tp / (tp + fn) if tp + fn else math.nan
    spec = tn / (tn + fp) if tn + fp else math.nan
    ppv = tp / (tp + fp) if tp + fp else math.nan
    (sens_low, sens_high), (spec_low, spec_high) = (
        wilson_interval(tp, tp + fn, level),
        wilson_interval(tn, tn + fp, level),
    )
    return {
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "sensitivity": sens,
        "sens_low": sens_low,
        "sens_high": sens_high,
        "specificity": spec,
        "spec_low": spec_low,
        "spec_high": spec_high,
        "ppv": ppv,
    }


BELOW_RULE = (
    "on or below: the model's ROC curve (straight lines between its points, the top of a vertical run) "
    "at the reader's FPR is at least the reader's TPR, in exact counts (the leaderboard's rule)"
)


def roc_counts(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    """The ROC curve in counts: (FP, TP) at every distinct threshold, highest score first, from (0, 0).

    Tied scores are one threshold, so a tie of positives and negatives is one diagonal step.
    """
    y, s = np.asarray(labels).astype(bool), np.asarray(scores, float)
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    ends = np.r_[np.flatnonzero(s_sorted[1:] != s_sorted[:-1]), len(s_sorted) - 1]  # last row of each tied block
    tp = np.cumsum(y_sorted, dtype=np.int64)[ends]
    fp = np.cumsum(~y_sorted, dtype=np.int64)[ends]
    return np.r_[np.int64(0), fp], np.r_[np.int64(0), tp]


def curve_height(curve_fp: np.ndarray, curve_tp: np.ndarray, fp: int, negatives: int) -> Fraction:
    """The curve's TPR at FPR ``fp / negatives``, exactly: straight lines between points, the top of a vertical run.

    ``curve_fp`` / ``curve_tp`` are ``roc_counts``; the reader's FPR may have another denominator than
    the curve's, so positions are compared as integers (``fp * N_curve`` against ``FP_k * negatives``).
    """
    n_curve, p_curve = int(curve_fp[-1]), int(curve_tp[-1])
    if n_curve == 0 or p_curve == 0 or negatives <= 0 or not 0 <= fp <= negatives:
        raise ValueError(
            f"no ROC height: curve has {p_curve} positives and {n_curve} negatives, reader FP {fp} of {negatives}"
        )
    position = [int(f) * negatives for f in curve_fp]  # exact: the curve's FP on the reader's scale times N_curve
    target = fp * n_curve
    at = [int(t) for f, t in zip(position, curve_tp) if f == target]
    if at:
        return Fraction(max(at), p_curve)  # a vertex (or a vertical run) at the reader's FPR: its top
    after = bisect.bisect_right(position, target)  # the first point right of the reader (the curve never turns back)
    (f0, t0), (f1, t1) = (position[after - 1], int(curve_tp[after - 1])), (position[after], int(curve_tp[after]))
    return (t0 + Fraction(t1 - t0) * Fraction(target - f0, f1 - f0)) / p_curve


def below_curve(labels, scores, tp: int, fp: int, tn: int, fn: int) -> tuple[bool, float]:
    """(reader on or below the model's ROC curve, the curve's TPR at the reader's FPR), from the reader's counts.

    The leaderboard's rule (see the module docstring, ``BELOW_RULE``): the curve's height at
    FPR = fp / (fp + tn), the top of any vertical run there, is at least TPR = tp / (tp + fn),
    compared exactly. A reader with no positives or no negatives is (False, NaN).
    """
    if tp + fn == 0 or fp + tn == 0:
        return False, math.nan
    curve_fp, curve_tp = roc_counts(labels, scores)
    if curve_fp[-1] == 0 or curve_tp[-1] == 0:
        return False, math.nan
    height = curve_height(curve_fp, curve_tp, fp, fp + tn)
    return bool(height >= Fraction(tp, tp + fn)), float(height)


def weighted_curves(y: np.ndarray, s: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, TPR) per row of ``weights`` at every distinct threshold, highest first, starting at (0, 0)."""
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted, w = s[order], y[order].astype(bool), weights[:, order]
    ends = np.r_[np.flatnonzero(s_sorted[1:] != s_sorted[:-1]), len(s_sorted) - 1]  # last row of each tied block
    tp = np.cumsum(w * y_sorted, axis=1)[:, ends]
    fp = np.cumsum(w * ~y_sorted, axis=1)[:, ends]
    with np.errstate(divide="ignore", invalid="ignore"):
        tpr, fpr = tp / tp[:, -1:], fp / fp[:, -1:]
    zeros = np.zeros((len(w), 1))
    return np.hstack([zeros, fpr]), np.hstack([zeros, tpr])


def matched_points(y: np.ndarray, s: np.ndarray, reads: np.ndarray, weights: np.ndarray) -> dict:
    """Per row of ``weights``: reader sens/spec, model sensitivity at the reader's specificity and vice versa."""
    y_b, r_b = y.astype(bool), reads.astype(bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        sens = (weights * (y_b & r_b)).sum(1) / (weights * y_b).sum(1)
        spec = (weights * (~y_b & ~r_b)).sum(1) / (weights * ~y_b).sum(1)
    fpr, tpr = weighted_curves(y, s, weights)
    eps = 1e-12
    model_sens = np.where(fpr <= (1 - spec)[:, None] + eps, tpr, -np.inf).max(axis=1)
    model_spec = 1 - np.where(tpr >= sens[:, None] - eps, fpr, np.inf).min(axis=1)
    return {"sens": sens, "spec": spec, "model_sens": model_sens, "model_spec": model_spec}


def score_readers(
    labels: pd.DataFrame,
    scores: pd.DataFrame,
    readers: dict,
    groups: pd.Series | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> pd.DataFrame:
    """One row per (observation, reader): the reader's operating point, below-curve, matched points with CIs.

    ``labels`` (reference, 0/1) and ``scores`` are study-level, indexed by study; observations are the
    columns of ``scores`` with both classes in ``labels``. Resamples draw whole patients (``groups``).
    """
    studies = labels.index
    counts = resample_counts(
        len(studies), n_resamples, seed, None if groups is None else groups.reindex(studies).to_numpy()
    )
    ones = np.ones((1, len(studies)))
    rows = []
    for obs in scores.columns:
        y = labels[obs].to_numpy().astype(int)
        if y.min() == y.max():
            continue
        s = scores.loc[studies, obs].to_numpy(float)
        for name, read in readers.items():
            r = read.loc[studies, obs].to_numpy().astype(int)
            row = {"observation": obs, "reader": name, "positives": int(y.sum()), "n": len(y)}
            row |= operating_point(y, r, level)
            row["below_curve"], row["model_tpr_at_reader_fpr"] = below_curve(
                y, s, row["tp"], row["fp"], row["tn"], row["fn"]
            )
            point, boot = matched_points(y, s, r, ones), matched_points(y, s, r, counts)
            row["model_sens_at_reader_spec"], row["model_spec_at_reader_sens"] = (
                point["model_sens"][0],
                point["model_spec"][0],
            )
            row["sens_delta"] = row["model_sens_at_reader_spec"] - row["sensitivity"]
            row["spec_delta"] = row["model_spec_at_reader_sens"] - row["specificity"]
            row["model_sens_low"], row["model_sens_high"] = percentile_interval(boot["model_sens"], level)
            row["model_spec_low"], row["model_spec_high"] = percentile_interval(boot["model_spec"], level)
            row["sens_delta_low"], row["sens_delta_high"] = percentile_interval(
                boot["model_sens"] - boot["sens"], level
            )
            row["spec_delta_low"], row["spec_delta_high"] = percentile_interval(
                boot["model_spec"] - boot["spec"], level
            )
            rows.append(row)
    return pd.DataFrame(rows, columns=list(READER_COLUMNS))


def below_summary(table: pd.DataFrame, tasks=COMPETITION_TASKS) -> dict:
    """Radiologists on or below the curve per task (``BELOW_RULE``), and the mean over ``tasks`` (None if a task is missing)."""
    per_task = {
        t: int(table.loc[table["observation"] == t, "below_curve"].sum())
        for t in tasks
        if (table["observation"] == t).any()
    }
    readers = sorted(table["reader"].unique())
    mean = float(np.mean(list(per_task.values()))) if len(per_task) == len(tasks) else None
    return {
        "per_task": per_task,
        "mean_over_tasks": mean,
        "readers": readers,
        "of": len(readers),
        "rule": BELOW_RULE,
    }


def score_official_test(
    labels: pd.DataFrame,
    scores: pd.DataFrame,
    readers: dict,
    groups: pd.Series | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """(AUROC/AP table with patient-bootstrap CIs, radiologist table, summary) for study-level ``scores``.

    ``scores`` may hold any subset of the observations (an external model's five tasks, say); the
    5-task mean and the mean radiologists below the curve need all five competition tasks.
    """
    observations = [o for o in scores.columns if o in labels.columns]
    table = bootstrap_auroc(labels[observations], scores[observations], n_resamples, seed, groups=groups, level=level)
    reader_table = score_readers(labels[observations], scores[observations], readers, groups, n_resamples, seed, level)
    tasks_present = all(t in observations for t in COMPETITION_TASKS)
    summary = {
        "eval_set": "official test",
        "reference": "majority vote of 5 radiologists",
        "mean_auroc_tasks": (
            mean_tasks_with_ci(labels, scores, n_resamples=n_resamples, seed=seed, groups=groups, level=level)
            if tasks_present
            else None
        ),
        "radiologists_below_curve": below_summary(reader_table) if len(reader_table) else None,
        "studies": len(labels),
        "resamples": n_resamples,
        "resampled": "patients" if groups is not None else "studies",
        "observations_scored": observations,
    }
    return table, reader_table, summary


def write_official_test(run_dir, table: pd.DataFrame, reader_table: pd.DataFrame, summary: dict) -> dict:
    """Write ``metrics_official_test.json/.csv`` and ``radiologists_official_test.csv/.json`` into the run folder."""
    run = RunDir(run_dir)
    metrics_json = run.metrics(OFFICIAL_TEST)
    write_metrics(table, summary, metrics_json)
    csv_path = write_table(reader_table, run.radiologists(OFFICIAL_TEST), index=False)
    json_path = write_json(
        csv_path.with_suffix(".json"),
        json_ready(
            {
                "radiologists": reader_table.to_dict(orient="records"),
                "below_curve": summary.get("radiologists_below_curve"),
            }
        ),
    )
    return {"metrics": metrics_json, "radiologists": csv_path, "radiologists_json": json_path}
