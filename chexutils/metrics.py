"""AUROC and average precision per observation (scikit-learn), NaN with a reason when undefined."""

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

from .labels import COMPETITION_TASKS


def certain_scores(labels: pd.Series, scores: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """The entries with a certain label: 1 positive, 0 negative or blank (uncertain left out)."""
    y = labels.fillna(0.0).to_numpy()
    keep = y != -1.0
    return y[keep].astype(int), scores.to_numpy()[keep]


def per_observation(labels: pd.DataFrame, scores: pd.DataFrame) -> pd.DataFrame:
    """One row per observation: n, positives, AUROC, AP, and why a metric is NaN when it is."""
    rows = {}
    for obs in labels.columns:
        y, s = certain_scores(labels[obs], scores[obs])
        positives = int(y.sum())
        row = {"n": len(y), "positives": positives, "auroc": np.nan, "ap": np.nan, "note": ""}
        if len(y) == 0 or positives in (0, len(y)):
            row["note"] = f"only one class present ({positives} positive of {len(y)})"
        else:
            row["auroc"] = roc_auc_score(y, s)
            row["ap"] = average_precision_score(y, s)
        rows[obs] = row
    return pd.DataFrame(rows).T


def mean_task_auroc(table: pd.DataFrame, tasks=COMPETITION_TASKS) -> float:
    """Mean AUROC over the competition tasks (NaN if any is undefined)."""
    return float(table.loc[list(tasks), "auroc"].astype(float).mean(skipna=False))
