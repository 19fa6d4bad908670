import numpy as np
import pandas as pd
import pytest

from chexutils.core.errors import DataError
from chexutils.core.labels import OBSERVATIONS
from chexutils.scoring.aggregate import aggregate_studies


def _frame():
    """Three studies: s1 with frontal+lateral, s2 with one frontal, s3 with one lateral."""
    rows = [
        ("patient00001", "patient00001/study1", True),
        ("patient00001", "patient00001/study1", False),
        ("patient00002", "patient00002/study1", True),
        ("patient00003", "patient00003/study1", False),
    ]
    frame = pd.DataFrame(rows, columns=["patient", "study", "frontal"])
    for i, obs in enumerate(OBSERVATIONS):
        frame[obs] = [1.0, 1.0, 0.0, np.nan] if i % 2 else [-1.0, -1.0, 1.0, 0.0]
    frame["line"] = [2, 3, 4, 5]
    probs = np.tile(np.array([[0.2], [0.9], [0.4], [0.7]]), (1, len(OBSERVATIONS)))
    return frame, probs


def test_max_over_a_studys_views_keyed_by_study():
    frame, probs = _frame()
    labels, scores = aggregate_studies(frame, probs)
    assert scores.loc["patient00001/study1", "Edema"] == 0.9
    assert scores.loc["patient00003/study1", "Edema"] == 0.7
    assert labels.loc["patient00001/study1", "Cardiomegaly"] == -1.0
    assert np.isnan(labels.loc["patient00003/study1", "Enlarged Cardiomediastinum"])


def test_row_order_does_not_matter():
    frame, probs = _frame()
    order = [3, 1, 0, 2]
    a = aggregate_studies(frame, probs)[1]
    b = aggregate_studies(frame.iloc[order].reset_index(drop=True), probs[order])[1]
    pd.testing.assert_frame_equal(a, b)


@pytest.mark.parametrize("how, expected", [("mean", 0.55), ("frontal-max", 0.2), ("frontal-mean", 0.2)])
def test_other_aggregations(how, expected):
    frame, probs = _frame()
    labels, scores = aggregate_studies(frame, probs, how=how)
    assert scores.loc["patient00001/study1", "Edema"] == pytest.approx(expected)
    if how.startswith("frontal"):
        assert "patient00003/study1" not in scores.index  # a lateral-only study has no frontal image
    with pytest.raises(ValueError, match="known: max, mean"):
        aggregate_studies(frame, probs, how="median")


def test_images_of_a_study_disagreeing_on_a_label_is_an_error():
    frame, probs = _frame()
    frame.loc[1, "Edema"] = 0.0
    with pytest.raises(
        DataError, match=r"study patient00001/study1: its images disagree on 'Edema' \(CSV lines 2, 3\)"
    ):
        aggregate_studies(frame, probs)
