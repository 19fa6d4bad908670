"""Study-level predictions: combine a study's image-level probabilities (the original study: max over views).

Keyed by (patient, study) — never by row order — and a study's images must agree on its labels.
"""

import numpy as np
import pandas as pd

from chexutils.core.errors import DataError
from chexutils.core.labels import OBSERVATIONS

HOW = ("max", "mean", "frontal-max", "frontal-mean")


def aggregate_studies(
    frame: pd.DataFrame, probabilities: np.ndarray, how: str = "max", observations=OBSERVATIONS
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (study labels, study probabilities), both indexed by study, columns = observations.

    ``how``: max / mean over a study's images, or the same over its frontal images only (studies
    without a frontal image are then left out). Disagreeing labels within a study are a DataError.
    """
    if how not in HOW:
        raise ValueError(f"unknown aggregation {how!r}; known: {', '.join(HOW)}")
    observations = list(observations)
    probs = pd.DataFrame(np.asarray(probabilities, float), columns=observations, index=frame.index)
    keep = frame["frontal"].to_numpy() if how.startswith("frontal-") else np.ones(len(frame), bool)
    keys = [frame["patient"][keep], frame["study"][keep]]
    labels = frame.loc[keep, observations]
    _check_study_labels_agree(frame.loc[keep], observations)
    study_labels = labels.groupby(keys, sort=True).first()
    study_probs = probs[keep].groupby(keys, sort=True).agg(how.removeprefix("frontal-"))
    for table in (study_labels, study_probs):
        table.index = table.index.get_level_values(1)
    return study_labels, study_probs


def _check_study_labels_agree(frame: pd.DataFrame, observations) -> None:
    filled = frame[observations].fillna(-9.0)
    spread = filled.groupby(frame["study"]).nunique()
    bad = spread[(spread > 1).any(axis=1)]
    if len(bad):
        study = bad.index[0]
        obs = bad.columns[(bad.loc[study] > 1).to_numpy()][0]
        lines = frame.loc[frame["study"] == study, "line"].tolist() if "line" in frame else []
        raise DataError(
            f"study {study}: its images disagree on {obs!r} (CSV lines {', '.join(map(str, lines))}); "
            "expected one label per study, since labels come from the study's report"
        )
