"""Radiologist operating points, below-the-curve and matched points on hand-checkable cases."""

import math
from fractions import Fraction

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


def _counts(reference, reads) -> dict:
    point = readers.operating_point(reference, reads)
    return {k: point[k] for k in ("tp", "fp", "tn", "fn")}


def test_curve_above_and_on_and_below_readers():
    # Model ROC through (0, 0), (0, .25), (.25, .25), (.25, .5), (.5, .5), (.5, .75), (.75, .75), (.75, 1), (1, 1)
    y = np.array([1, 0, 1, 0, 1, 0, 1, 0])
    s = np.array([8, 7, 6, 5, 4, 3, 2, 1], float)
    # FPR .125 (between vertices): the curve is flat at .25 there; a reader at .25 is on it and counts
    below, height = readers.below_curve(y, s, tp=1, fp=1, tn=7, fn=3)  # 8 negatives for the reader: FPR 1/8
    assert below and height == 0.25
    below, height = readers.below_curve(y, s, tp=2, fp=1, tn=7, fn=2)  # TPR .5 above the flat .25
    assert not below and height == 0.25
    below, height = readers.below_curve(y, s, tp=2, fp=3, tn=5, fn=2)  # FPR .375: curve at .5 -> on it, counts
    assert below and height == 0.5
    below, _ = readers.below_curve(y, s, tp=1, fp=3, tn=5, fn=3)  # TPR .25 under .5
    assert below
    below, _ = readers.below_curve(y, s, tp=4, fp=1, tn=3, fn=0)  # FPR .25: the curve tops out at .5 -> above
    assert not below

    labels = pd.DataFrame({"Edema": y}, index=list("abcdefgh"))
    scores = pd.DataFrame({"Edema": s}, index=list("abcdefgh"))
    reads = {"on": [1, 1, 1, 0, 0, 0, 0, 0], "under": [0, 1, 1, 1, 0, 1, 0, 0], "over": [1, 1, 1, 0, 1, 0, 0, 0]}
    # on: TP 2 of 4, FP 1 of 4 -> (.25, .5), the top of the curve's vertical run at .25; under: TP 1, FP 3 ->
    # (.75, .25) below the curve's .75 there; over: TP 3, FP 1 -> (.25, .75) above
    table = readers.score_readers(
        labels, scores, {k: pd.DataFrame({"Edema": v}, index=labels.index) for k, v in reads.items()}, n_resamples=50
    )
    assert table.set_index("reader")["below_curve"].to_dict() == {"on": True, "under": True, "over": False}


def test_a_reader_inside_a_vertical_run_gets_its_top_not_its_bottom():
    # 5 negatives, 4 positives. The curve: (0, 0), (0, 1), (1, 1), (1, 2), (1, 3), (1, 4), (2, 4) ... (5, 4) in counts,
    # a vertical run at FPR 1/5 with vertices at TPR .25, .5, .75 and 1. In floating point 1 - 4/5 is
    # 0.19999999999999996, a hair left of 1/5 = 0.2, where the curve is still at .25: the old rule read
    # the bottom of the run there and put both readers above the curve.
    assert 1 - 4 / 5 < 1 / 5
    y = np.array([1, 0, 1, 1, 1, 0, 0, 0, 0])
    s = np.array([9, 8, 7, 6, 5, 4, 3, 2, 1], float)
    fp, tp = readers.roc_counts(y, s)
    assert list(zip(fp.tolist(), tp.tolist())) == [(0, 0), (0, 1), (1, 1), (1, 2), (1, 3), (1, 4)] + [
        (k, 4) for k in range(2, 6)
    ]
    middle = [1, 1, 1, 0, 0, 0, 0, 0, 0]  # TP 2 of 4, FP 1 of 5: a vertex in the middle of the run
    top = [1, 1, 1, 1, 1, 0, 0, 0, 0]  # TP 4 of 4, FP 1 of 5: the run's top vertex, exactly on the curve
    for reads in (middle, top):
        assert readers.below_curve(y, s, **_counts(y, reads)) == (True, 1.0)
    labels = pd.DataFrame({"Edema": y}, index=list("abcdefghi"))
    scores = pd.DataFrame({"Edema": s}, index=labels.index)
    table = readers.score_readers(
        labels,
        scores,
        {k: pd.DataFrame({"Edema": v}, index=labels.index) for k, v in {"middle": middle, "top": top}.items()},
        n_resamples=20,
    ).set_index("reader")
    assert table["below_curve"].to_dict() == {"middle": True, "top": True}
    assert table["model_tpr_at_reader_fpr"].to_dict() == {"middle": 1.0, "top": 1.0}
    assert readers.below_summary(table.reset_index(), tasks=("Edema",))["per_task"] == {"Edema": 2}


def _height_by_brute_force(y: np.ndarray, s: np.ndarray, fp: int, negatives: int) -> Fraction:
    """The curve's TPR at FPR fp / negatives: every threshold's counts, every segment containing the FPR, the highest."""
    pos, neg = int(y.sum()), int(len(y) - y.sum())
    points = [(0, 0)] + [
        (int(((s >= t) & (y == 0)).sum()), int(((s >= t) & (y == 1)).sum())) for t in sorted(set(s))[::-1]
    ]
    x = Fraction(fp, negatives)
    heights = []
    for (f0, t0), (f1, t1) in zip(points, points[1:]):
        a, b = Fraction(f0, neg), Fraction(f1, neg)
        if a == x:
            heights.append(Fraction(t0, pos))
        if b == x:
            heights.append(Fraction(t1, pos))
        if a < x < b:
            heights.append(Fraction(t0, pos) + (Fraction(t1, pos) - Fraction(t0, pos)) * (x - a) / (b - a))
    return max(heights)


def test_below_curve_agrees_with_a_brute_force_count_computation():
    rng = np.random.default_rng(19)
    checked = on_the_curve = 0
    for _ in range(300):
        n = int(rng.integers(4, 40))
        y = rng.integers(0, 2, n)
        if y.min() == y.max():
            continue
        s = rng.integers(0, int(rng.integers(2, 12)), n).astype(float) + y * rng.integers(0, 3)  # many ties
        reads = np.where(rng.random(n) < rng.uniform(0, 0.5), 1 - y, y)
        counts = _counts(y, reads)
        height = _height_by_brute_force(y, s, counts["fp"], counts["fp"] + counts["tn"])
        tpr = Fraction(counts["tp"], counts["tp"] + counts["fn"])
        assert readers.below_curve(y, s, **counts) == (height >= tpr, float(height))
        # the same reader's FPR on another denominator (twice the negatives): the same point, the same answer
        doubled = {k: 2 * v for k, v in counts.items()}
        assert readers.below_curve(y, s, **doubled) == (height >= tpr, float(height))
        checked += 1
        on_the_curve += height == tpr
    assert checked > 250 and on_the_curve > 10  # ties with the curve happen, and count


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
