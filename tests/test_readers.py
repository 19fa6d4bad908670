"""Radiologist operating points, below-the-curve and matched points on hand-checkable cases."""

import math

import numpy as np
import pandas as pd
import pytest

from chexutils.core.labels import COMPETITION_TASKS
from chexutils.evaluation import readers


def _wilson_by_hand(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def test_operating_point_of_a_reader_with_known_counts():
    # 6 positives, 8 negatives: the reader finds 4 positives (TP 4, FN 2) and calls 2 negatives positive (FP 2, TN 6)
    reference = [1] * 6 + [0] * 8
    reads = [1, 1, 1, 1, 0, 0] + [1, 1, 0, 0, 0, 0, 0, 0]
    point = readers.operating_point(reference, reads)
    assert (point["tp"], point["fn"], point["fp"], point["tn"]) == (4, 2, 2, 6)
    assert point["sensitivity"] == pytest.approx(4 / 6) and point["specificity"] == pytest.approx(6 / 8)
    assert point["ppv"] == pytest.approx(4 / 6)
    assert (point["sens_low"], point["sens_high"]) == pytest.approx(_wilson_by_hand(4, 6))
    assert (point["spec_low"], point["spec_high"]) == pytest.approx(_wilson_by_hand(6, 8))


def test_curve_above_exactly_one_reader():
    # Model ROC through (0, 0), (0, .25), (0, .5), (.25, .5), (.25, .75), (.5, .75), (.5, 1), (.75, 1), (1, 1)
    y = np.array([1, 1, 0, 1, 0, 1, 0, 0])
    s = np.array([8, 7, 6, 5, 4, 3, 2, 1], float)
    below, height = readers.below_curve(y, s, sensitivity=0.5, specificity=0.875)  # FPR .125: curve at .5 -> on it
    assert not below and height == pytest.approx(0.5)
    below, height = readers.below_curve(y, s, sensitivity=0.6, specificity=0.625)  # FPR .375: curve at .75 -> below
    assert below and height == pytest.approx(0.75)
    below, _ = readers.below_curve(y, s, sensitivity=1.0, specificity=0.75)  # FPR .25: curve tops out at .75 -> above
    assert not below

    labels = pd.DataFrame({"Edema": y}, index=list("abcdefgh"))
    scores = pd.DataFrame({"Edema": s}, index=list("abcdefgh"))
    reads = {"on": [1, 1, 1, 1, 0, 0, 0, 0], "under": [1, 0, 1, 1, 1, 0, 0, 0], "over": [1, 1, 0, 1, 1, 1, 0, 0]}
    # on: TP 3 of 4, FP 1 of 4 -> (.25, .75), the top of the curve's vertical run at .25; under: TP 2, FP 2 ->
    # (.5, .5) below the curve's .75 there;
    # over: TP 4, FP 1 -> (.25, 1) above
    table = readers.score_readers(
        labels, scores, {k: pd.DataFrame({"Edema": v}, index=labels.index) for k, v in reads.items()}, n_resamples=50
    )
    assert table.set_index("reader")["below_curve"].to_dict() == {"on": False, "under": True, "over": False}


def test_sensitivity_at_the_readers_specificity_uses_a_real_threshold():
    y = np.array([1, 1, 0, 1, 0, 1, 0, 0])
    s = np.array([8, 7, 6, 5, 4, 3, 2, 1], float)
    reads = np.array([1, 0, 1, 1, 1, 0, 0, 0])  # sens .5, spec .5
    point = readers.matched_points(y, s, reads, np.ones((1, 8)))
    assert point["sens"][0] == pytest.approx(0.5) and point["spec"][0] == pytest.approx(0.5)
    assert point["model_sens"][0] == pytest.approx(1.0)  # threshold 3: FPR .5, TPR 1
    assert point["model_spec"][0] == pytest.approx(1.0)  # threshold 7: TPR .5, FPR 0


def test_paired_bootstrap_interval_and_five_task_summary():
    rng = np.random.default_rng(0)
    n = 300
    labels = pd.DataFrame({t: rng.integers(0, 2, n) for t in COMPETITION_TASKS}, index=[f"s{i}" for i in range(n)])
    scores = labels + rng.normal(0, 0.35, labels.shape)  # a strong model
    noisy = lambda col: np.where(rng.random(n) < 0.3, 1 - col, col)  # a reader wrong 30% of the time
    bench = {r: labels.apply(noisy) for r in ("bc4", "bc6", "bc8")}
    groups = pd.Series([f"p{i // 2}" for i in range(n)], index=labels.index)  # two studies per patient
    table, reader_table, summary = readers.score_official_test(labels, scores, bench, groups, n_resamples=300, seed=1)
    assert summary["radiologists_below_curve"]["mean_over_tasks"] == 3.0  # the strong model beats every weak reader
    assert summary["mean_auroc_tasks"]["mean"] > 0.9 and summary["resampled"] == "patients"
    for row in reader_table.itertuples():
        assert row.sens_delta_low <= row.sens_delta <= row.sens_delta_high
        assert row.sens_delta_low > 0  # better than the reader, and the interval says so
        assert row.model_sens_low <= row.model_sens_at_reader_spec <= row.model_sens_high


def test_external_subset_of_observations_is_scored():
    rng = np.random.default_rng(2)
    labels = pd.DataFrame({"Edema": rng.integers(0, 2, 60), "Fracture": rng.integers(0, 2, 60)})
    scores = labels[["Edema"]] + rng.normal(0, 1, (60, 1))
    table, reader_table, summary = readers.score_official_test(labels, scores, {}, None, n_resamples=100)
    assert list(table.index) == ["Edema"] and summary["mean_auroc_tasks"] is None and reader_table.empty
