"""Operating points: thresholds by each rule on a hand-checkable case, Wilson intervals by hand, and
a threshold chosen on one set reported on another (never the same set)."""

import math

import numpy as np
import pandas as pd
import pytest
from test_calibration import synthetic_run

from chexutils.core.errors import DataError
from chexutils.core.labels import OBSERVATIONS
from chexutils.evaluation.operating_points import (
    choose_and_report,
    choose_threshold,
    describe_rule,
    display_table,
    operating_point,
    parse_rule,
    write_operating_points,
)
from chexutils.scoring.metrics import certain_scores
from chexutils.scoring.stats import wilson_interval

# Sorted by score: negatives at .1 .3 .4, positives at .35 .7 .8.
Y = np.array([0, 0, 1, 0, 1, 1])
S = np.array([0.1, 0.3, 0.35, 0.4, 0.7, 0.8])


@pytest.mark.parametrize(
    "rule, threshold",
    [
        ("youden", 0.7),  # J = 2/3 at .7 (sens 2/3, spec 1) and at .35 (sens 1, spec 2/3): the higher one
        ("sensitivity>=0.9", 0.35),  # the highest threshold that catches all three positives
        ("sensitivity >= 0.5", 0.7),  # two of three positives
        ("specificity>=0.9", 0.7),  # no false positive: the lowest such threshold
        ("specificity>=0.6", 0.35),  # one false positive of three allowed
        ("specificity≥1", 0.7),  # '≥' reads as '>=' (papermill cannot parse '=' inside a parameter)
    ],
)
def test_rules_by_hand(rule, threshold):
    chosen, note = choose_threshold(Y, S, rule)
    assert chosen == pytest.approx(threshold) and note == ""
    point = operating_point(Y, S, chosen)
    kind, x = parse_rule(rule)
    if kind != "youden":
        assert point[kind] >= x


def test_threshold_calling_nothing_and_one_class():
    chosen, _ = choose_threshold(Y, S, "sensitivity>=0")
    assert chosen > S.max() and operating_point(Y, S, chosen)["tp"] + operating_point(Y, S, chosen)["fp"] == 0
    threshold, note = choose_threshold(np.zeros(4), S[:4], "youden")
    assert math.isnan(threshold) and "one class" in note
    for bad in ("sensitivity>0.9", "ppv>=0.5", "specificity>=1.5", "youden2"):
        with pytest.raises(ValueError, match="unknown operating-point rule"):
            parse_rule(bad)
    assert "Youden" in describe_rule("youden") and "0.9" in describe_rule("sensitivity>=0.9")


def test_wilson_interval_by_hand():
    z2 = 1.959963984540054**2
    low, high = wilson_interval(0, 10)
    assert low == pytest.approx(0.0, abs=1e-12) and high == pytest.approx(z2 / (10 + z2))  # 0.2775
    low, high = wilson_interval(5, 10)
    half = math.sqrt(z2) * math.sqrt(0.25 / 10 + z2 / 400) / (1 + z2 / 10)
    assert (low, high) == (pytest.approx(0.5 - half), pytest.approx(0.5 + half))  # 0.2366-0.7634
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


def test_chosen_on_one_set_reported_on_another(tmp_path):
    valid = synthetic_run("r", "valid", 120, seed=1)
    held_out = synthetic_run("r", "train", 160, seed=2, first_patient=500)
    valid.study_labels["Fracture"] = 0.0  # one class on the choosing set: no threshold
    table = choose_and_report(valid, "official valid", held_out, "held-out", rules=("youden", "specificity>=0.9"))
    assert len(table) == 2 * len(OBSERVATIONS)
    row = table[(table["rule"] == "specificity>=0.9") & (table["observation"] == "Edema")].iloc[0]
    y_fit, s_fit = certain_scores(valid.study_labels["Edema"], valid.study_scores["Edema"])
    threshold, _ = choose_threshold(y_fit, s_fit, "specificity>=0.9")
    assert row["threshold"] == threshold and row["specificity on official valid"] >= 0.9
    y, s = certain_scores(held_out.study_labels["Edema"], held_out.study_scores["Edema"])
    want = operating_point(y, s, threshold)
    assert (row["tp"], row["fp"], row["tn"], row["fn"]) == (want["tp"], want["fp"], want["tn"], want["fn"])
    assert row["n"] == len(y) and row["positives"] == y.sum() == want["tp"] + want["fn"]
    low, high = wilson_interval(want["tn"], want["tn"] + want["fp"])
    assert (row["specificity_low"], row["specificity_high"]) == (pytest.approx(low), pytest.approx(high))
    assert row["specificity_low"] <= row["specificity"] <= row["specificity_high"]
    fracture = table[(table["rule"] == "youden") & (table["observation"] == "Fracture")].iloc[0]
    assert (
        math.isnan(fracture["threshold"])
        and math.isnan(fracture["sensitivity_low"])
        and "one class" in fracture["note"]
    )
    with pytest.raises(DataError, match="held-out.*'official valid'"):
        choose_and_report(valid, "official valid", valid, "held-out")
    path = write_operating_points(table, tmp_path)
    assert pd.read_csv(path)["tp"].notna().sum() == len(table) - 2
    shown = display_table(table)
    assert shown.loc[("youden", "Fracture"), "sensitivity"] == "n/a"
    assert shown.loc[("specificity>=0.9", "Edema"), "specificity"].startswith(f"{row['specificity']:.2f} (")
    # issue 19 item 12: thresholds from radiologist labels, rates against report labels: the table says so
    assert shown.loc[("youden", "Edema"), "labels"] == (
        "fitted on official valid radiologist labels (on the phantom: the truth), "
        "scored on held-out against report labels (blank = negative, uncertain left out)"
    )
