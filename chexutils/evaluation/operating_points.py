"""Operating points: a threshold chosen on one evaluation set by a stated rule, reported on another with
sensitivity, specificity, PPV and NPV, their Wilson 95% intervals and the confusion counts.

Why: "what does 0.5 mean?" has no answer for an uncalibrated model; a threshold must be chosen on
one set (official valid) and its rates read on another (held-out), or they are optimistic.
A score >= threshold is called positive.
"""

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_curve

from chexutils.core.io import write_table
from chexutils.core.labels import OBSERVATIONS
from chexutils.core.rundir import RunDir
from chexutils.evaluation.calibration import check_disjoint, labels_note
from chexutils.evaluation.evaluate import LEVELS, RunScores
from chexutils.scoring.metrics import certain_scores
from chexutils.scoring.stats import wilson_interval

RULES = ("youden", "sensitivity>=x", "specificity>=x")  # also written with '≥'
RULE_TEXT = {
    "youden": "Youden's J (max sensitivity + specificity - 1; ties: the higher threshold)",
    "sensitivity": "the highest threshold with sensitivity >= {x} (best specificity there)",
    "specificity": "the lowest threshold with specificity >= {x} (best sensitivity there)",
}
RATES = {"sensitivity": ("tp", "fn"), "specificity": ("tn", "fp"), "ppv": ("tp", "fp"), "npv": ("tn", "fn")}


def _ratio(num: int, den: int) -> float:
    """num / den, NaN when the denominator is 0 (a rate that is undefined, not zero)."""
    return num / den if den else float("nan")


def operating_point(y: np.ndarray, scores: np.ndarray, threshold: float) -> dict:
    """Confusion counts and rates when score >= threshold is called positive (NaN where undefined)."""
    y = np.asarray(y).astype(int)
    predicted = np.asarray(scores, float) >= threshold
    tp = int(np.sum(predicted & (y == 1)))
    fp = int(np.sum(predicted & (y == 0)))
    tn = int(np.sum(~predicted & (y == 0)))
    fn = int(np.sum(~predicted & (y == 1)))
    return {
        "threshold": float(threshold),
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "ppv": _ratio(tp, tp + fp),
        "npv": _ratio(tn, tn + fn),
    }


def parse_rule(rule: str) -> tuple[str, float]:
    """'youden' -> ('youden', nan); 'sensitivity>=0.9' -> ('sensitivity', 0.9); likewise specificity.

    '≥' may stand for '>=' (papermill cannot read a parameter whose value holds '=', so notebooks use '≥').
    """
    text = rule.replace(" ", "").replace("≥", ">=").lower()
    if text == "youden":
        return "youden", math.nan
    match = re.fullmatch(r"(sensitivity|specificity)>=(0(?:\.\d+)?|1(?:\.0*)?)", text)
    if not match:
        raise ValueError(f"unknown operating-point rule {rule!r}; known: {', '.join(RULES)} with 0 <= x <= 1")
    return match.group(1), float(match.group(2))


def describe_rule(rule: str) -> str:
    """The rule in words, e.g. for a widget's caption or a table's note."""
    kind, x = parse_rule(rule)
    return RULE_TEXT[kind].format(x=x)


def choose_threshold(y, scores, rule: str = "youden") -> tuple[float, str]:
    """(threshold, note) chosen on these labels and scores; NaN with the reason when it cannot be chosen.

    Candidates are the distinct scores (sklearn's roc_curve without dropping points) plus one just
    above the maximum (calling nothing positive).
    """
    kind, x = parse_rule(rule)
    y, scores = np.asarray(y).astype(int), np.asarray(scores, float)
    if not 0 < y.sum() < len(y):
        return math.nan, f"not chosen: only one class present ({int(y.sum())} positive of {len(y)})"
    fpr, tpr, thresholds = roc_curve(y, scores, drop_intermediate=False)  # thresholds decreasing
    thresholds = np.where(np.isinf(thresholds), np.nextafter(scores.max(), np.inf), thresholds)
    if kind == "youden":
        youden = tpr - fpr
        best = np.flatnonzero(youden >= youden.max() - 1e-12)  # ties (up to rounding): the highest threshold
        return float(thresholds[best[0]]), ""
    if kind == "sensitivity":
        ok = np.flatnonzero(tpr >= x - 1e-12)
        return float(thresholds[ok[0]]), ""  # tpr reaches 1 at the lowest score, so ok is never empty
    ok = np.flatnonzero(1 - fpr >= x - 1e-12)
    return float(thresholds[ok[-1]]), ""  # the first candidate has fpr 0, so ok is never empty


def report_point(y, scores, threshold: float, level: float = 0.95) -> dict:
    """``operating_point`` plus a Wilson interval (``<rate>_low`` / ``<rate>_high``) for each rate."""
    point = (
        operating_point(y, scores, threshold)
        if np.isfinite(threshold)
        else dict.fromkeys(("threshold", *RATES, "tp", "fp", "tn", "fn"), math.nan)
    )
    for rate, (hit, miss) in RATES.items():
        if np.isfinite(threshold):
            point[f"{rate}_low"], point[f"{rate}_high"] = wilson_interval(point[hit], point[hit] + point[miss], level)
        else:
            point[f"{rate}_low"] = point[f"{rate}_high"] = math.nan
    return point


def choose_and_report(
    fit: RunScores,
    fit_name: str,
    score: RunScores,
    score_name: str,
    rules=("youden",),
    level: str = "study",
    observations=OBSERVATIONS,
) -> pd.DataFrame:
    """For each rule and observation: the threshold chosen on ``fit`` and the rates it gives on ``score``.

    ``score`` must share no image with ``fit`` (a DataError otherwise). Columns: rule, observation,
    threshold, the sensitivity / specificity it had on the choosing set, then n, positives, counts,
    rates and Wilson 95% intervals on the reporting set (studies treated as independent), and a note.
    """
    if level not in LEVELS:
        raise ValueError(f"unknown level {level!r}; known: {', '.join(LEVELS)}")
    check_disjoint(frozenset(fit.image_labels.index), fit_name, score, score_name)
    fit_labels, fit_scores = fit.level(level)
    labels, scores = score.level(level)
    rows = []
    for rule in rules:
        for obs in observations:
            y_fit, s_fit = certain_scores(fit_labels[obs], fit_scores.loc[fit_labels.index, obs])
            threshold, note = choose_threshold(y_fit, s_fit, rule)
            chosen = operating_point(y_fit, s_fit, threshold) if not note else {}
            y, s = certain_scores(labels[obs], scores.loc[labels.index, obs])
            row = {
                "rule": rule,
                "observation": obs,
                "chosen on": fit_name,
                "reported on": score_name,
                "labels": labels_note(fit_name, score_name),
                f"sensitivity on {fit_name}": chosen.get("sensitivity", math.nan),
                f"specificity on {fit_name}": chosen.get("specificity", math.nan),
                "n": len(y),
                "positives": int(y.sum()),
                **report_point(y, s, threshold),
                "note": note,
            }
            rows.append(row)
    return pd.DataFrame(rows)


def write_operating_points(table: pd.DataFrame, run_dir) -> Path:
    """``operating_points.csv`` in the run folder (one row per rule x observation)."""
    return write_table(table, RunDir(run_dir).operating_points, index=False, float_format="%.6g")


def display_table(table: pd.DataFrame) -> pd.DataFrame:
    """Rates as 'value (low-high)' text beside the threshold and counts, for reading in a notebook."""
    out = table[["rule", "observation", "threshold", "n", "positives", "tp", "fp", "tn", "fn"]].copy()
    for rate in RATES:
        out[rate] = [_with_ci(v, lo, hi) for v, lo, hi in zip(table[rate], table[f"{rate}_low"], table[f"{rate}_high"])]
    out["note"] = table["note"]
    if "labels" in table and table["labels"].astype(bool).any():  # thresholds and rates from different labels
        out["labels"] = table["labels"]
    return out.set_index(["rule", "observation"])


def _with_ci(value, low, high) -> str:
    return "n/a" if not np.isfinite(value) else f"{value:.2f} ({low:.2f}–{high:.2f})"
