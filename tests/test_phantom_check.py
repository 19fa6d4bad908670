"""The phantom check: Holm by hand, Wilson agreement, control verdicts on hand-made choice tables."""

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest
from sklearn.metrics import cohen_kappa_score

from chexutils.core.labels import OBSERVATIONS
from chexutils.evaluation import phantom_check as pc
from chexutils.phantom import PhantomTruth


def test_agreement_counts_defined_pairs_with_a_wilson_interval():
    first = pd.Series({"a": "U-Ones", "b": "U-Zeros", "c": "U-Ones", "d": "undefined"})
    second = pd.Series({"a": "U-Ones", "b": "U-Ones", "c": "U-Ones", "d": "U-Ones"})
    result = pc.agreement(first, second)
    ci = binomtest(2, 3).proportion_ci(method="wilson")
    assert (result["agree"], result["of"]) == (2, 3) and result["rate"] == pytest.approx(2 / 3)
    assert (result["ci_low"], result["ci_high"]) == pytest.approx((ci.low, ci.high))


def _table(decisions: dict, signs: dict, nulls: dict | None = None) -> pd.DataFrame:
    """A choices() table; ``nulls``: {observation: (delta, ci_low, ci_high, smaller class)} (default: an
    equivalent null, Δ 0.001 with CI ±0.01 on 40 in the smaller class)."""
    nulls = {"No Finding": (0.001, -0.009, 0.011, 40), "Support Devices": (0.0, -0.01, 0.01, 40)} | (nulls or {})
    rows = {
        o: {
            "U-Ones minus U-Zeros": 0.1 if signs.get(o, "U-Ones") == "U-Ones" else -0.1,
            "ci_low": 0.05,
            "ci_high": 0.15,
            "p_value": 0.001,
            "positives": 40,
            "negatives": 60,
            "p_holm": 0.001 if decisions.get(o, pc.NO_DETECTABLE) != pc.NO_DETECTABLE else 0.5,
            "decision": decisions.get(o, pc.NO_DETECTABLE),
            "sign": signs.get(o, "U-Ones"),
            "n": 100,
        }
        for o in OBSERVATIONS
    }
    for o, (delta, low, high, smaller) in nulls.items():
        rows[o] |= {"U-Ones minus U-Zeros": delta, "ci_low": low, "ci_high": high, "positives": smaller}
    return pd.DataFrame.from_dict(rows, orient="index")


TRUTH = PhantomTruth(
    pd.DataFrame(),
    {o: ("U-Ones" if o == "Atelectasis" else "no material difference") for o in OBSERVATIONS},
    ["Atelectasis"],
    "Atelectasis",
    ["No Finding", "Support Devices"],
    {},
)


def test_check_passes_when_the_control_is_found_and_nulls_are_quiet(tmp_path):
    selected = _table({"Atelectasis": "U-Ones"}, {})
    labels = _table({}, {"Edema": "U-Zeros"})
    sizing = pd.DataFrame({"studies needed": {"Atelectasis": 80.0}})
    table, checks = pc.check(TRUTH, selected, selected, labels, "official valid", sizing=sizing)
    assert checks["positive control recovered"] and checks["null controls equivalent"] == "PASS"
    assert checks["studies needed for the positive control"] == 80 and checks["studies in the selection set"] == 100
    assert table.loc["Atelectasis", "studies needed (power 0.8, Holm)"] == 80
    assert checks["agreement certain labels vs truth (held-out, signs)"]["of"] == 1
    pc.enforce(checks, strict=True)
    path = pc.write_check(tmp_path, table, checks)
    text = path.read_text()
    assert "PASS: positive control Atelectasis" in text and "(100 studies" in text
    assert "1 of 1 = 1.00" in text  # agreement only over the observations with an expected effect (Atelectasis)
    assert json.loads((tmp_path / pc.CHECK_JSON).read_text())["positive control recovered"] is True
    assert "control needs 80 for 80% power" in text
    assert "seed SD" not in text  # no seed columns in this table: nothing measured is claimed
    # the seed SDs the runs measured for the positive control, beside the sizing's guess
    measured = selected.assign(**{"U-Zeros seed SD": 0.004, "U-Ones seed SD": 0.01, "smallest detectable": 0.05})
    _, close = pc.check(TRUTH, measured, measured, labels, "official valid", sizing=sizing, plan_seed_sd=0.01)
    text = pc.write_check(tmp_path, table, close).read_text()
    assert close["positive control seed SD (measured)"] == {"U-Zeros": 0.004, "U-Ones": 0.01}
    assert "assumed a seed SD of 0.01; the runs measured U-Zeros 0.004 / U-Ones 0.010 for Atelectasis" in text
    assert "smallest Δ detectable at 80% power is 0.050" in text and "guess was too small" not in text
    wide = measured.assign(**{"U-Ones seed SD": 0.067, "smallest detectable": 0.246})
    text = pc.write_check(
        tmp_path, *pc.check(TRUTH, wide, wide, labels, "official valid", plan_seed_sd=0.01)
    ).read_text()
    assert "U-Ones 0.067" in text and "is 0.246 (the sizing's guess was too small" in text
    unsized = pc.check(TRUTH, selected, selected, labels, "official valid", sizing=sizing * math.inf)
    text = pc.write_check(tmp_path, *unsized).read_text()  # 2 seeds per policy: no study count suffices
    assert "control needs more than any study count gives with these seeds per policy" in text


def test_check_fails_on_a_missed_control_or_a_null_not_shown_equivalent():
    selected = _table({"Atelectasis": pc.NO_DETECTABLE}, {}, {"No Finding": (-0.03, -0.05, -0.01, 40)})
    _, checks = pc.check(TRUTH, selected, selected, selected, "held-out truth")
    assert not checks["positive control recovered"] and checks["null controls equivalent"] == "FAIL"
    pc.enforce(checks, strict=False)
    with pytest.raises(AssertionError, match="positive control recovered, null controls equivalent \\(FAIL\\)"):
        pc.enforce(checks, strict=True)


def test_a_phantom_without_a_positive_control_is_not_checkable_never_pass(tmp_path):
    """Over the learner family the hand-set phantom has no positive control: the check says so, and strict fails."""
    truth = PhantomTruth(pd.DataFrame(), TRUTH.expected, [], None, TRUTH.null_controls, {})
    selected = _table({}, {})
    table, checks = pc.check(truth, selected, selected, selected, "official valid")
    text = pc.write_check(tmp_path, table, checks).read_text()
    assert "NOT CHECKABLE: positive control" in text and "PASS: positive control" not in text
    assert "FAIL: positive control" not in text
    with pytest.raises(AssertionError, match="positive control \\(NOT CHECKABLE: this phantom has none\\)"):
        pc.enforce(checks, strict=True)


def test_null_controls_are_judged_by_equivalence_within_the_margin_and_not_checkable_below_the_floor(tmp_path):
    """Issue 19 item 9: small Δ with a tight CI passes; a wide CI is not shown equivalent even though no
    Holm-adjusted (or unadjusted) test flags it; below 30 in the smaller class: not checkable, never PASS."""
    assert pc.EQUIVALENCE_MARGIN == 0.02 and pc.CHECKABLE_MIN == 30
    tight = pc.null_verdict(
        pd.Series(
            {"U-Ones minus U-Zeros": 0.004, "ci_low": -0.012, "ci_high": 0.019, "positives": 30, "negatives": 900}
        )
    )
    assert tight["verdict"] == "equivalent"
    wide = pd.Series(
        {
            "U-Ones minus U-Zeros": 0.0,
            "ci_low": -0.06,
            "ci_high": 0.06,
            "positives": 200,
            "negatives": 800,
            "p_value": 1.0,
        }
    )
    assert pc.null_verdict(wide)["verdict"] == "not shown equivalent"
    few = {"U-Ones minus U-Zeros": 0.0, "ci_low": -0.005, "ci_high": 0.005, "positives": 29, "negatives": 900}
    assert pc.null_verdict(pd.Series(few))["verdict"] == "not checkable"
    # the wide null is not flagged by the Holm-adjusted decision, yet the check does not pass
    selected = _table({"Atelectasis": "U-Ones"}, {}, {"No Finding": (0.0, -0.06, 0.06, 200)})
    table, checks = pc.check(TRUTH, selected, selected, selected, "official valid")
    assert checks["null controls flagged (Holm, for reference)"] == [] and checks["null controls equivalent"] == "FAIL"
    text = pc.write_check(tmp_path, table, checks).read_text()
    assert "FAIL: null controls No Finding, Support Devices shown equivalent" in text
    assert "No Finding not shown equivalent (95% CI -0.060 to +0.060 not inside ±0.02)" in text
    below = _table({"Atelectasis": "U-Ones"}, {}, {"Support Devices": (0.0, -0.005, 0.005, 12)})
    table, checks = pc.check(TRUTH, below, below, below, "official valid")
    assert checks["null controls equivalent"] == "NOT CHECKABLE"
    text = pc.write_check(tmp_path, table, checks).read_text()
    assert (
        "NOT CHECKABLE: null controls" in text
        and "Support Devices not checkable (12 in the smaller class < 30)" in text
    )
    assert "PASS: null" not in text
    assert table.loc["Support Devices", "null control (95% CI of Δ within ±0.02)"] == "not checkable"
    with pytest.raises(AssertionError, match="NOT CHECKABLE"):
        pc.enforce(checks, strict=True)
    assert "Holm over the observations with >= 30 in the smaller class" in text  # the family 07 actually uses


def test_agreement_is_reported_beside_chance_with_cohens_kappa_over_expected_effects_only(tmp_path):
    """Issue 19 item 10: κ against sklearn's cohen_kappa_score; chance = pa pb + (1 - pa)(1 - pb); the
    check's agreement counts only observations with an expected better policy (not coin-flip nulls)."""
    first = pd.Series({"a": "U-Ones", "b": "U-Zeros", "c": "U-Ones", "d": "U-Zeros", "e": "U-Ones"})
    second = pd.Series({"a": "U-Ones", "b": "U-Ones", "c": "U-Ones", "d": "U-Zeros", "e": "U-Zeros"})
    result = pc.agreement(first, second)
    x, y = (first == "U-Ones").astype(int), (second == "U-Ones").astype(int)
    assert result["kappa"] == pytest.approx(cohen_kappa_score(x, y))
    assert result["chance"] == pytest.approx(0.6 * 0.6 + 0.4 * 0.4)
    # 14 observations, only Atelectasis with an expected effect: agreement is over that one alone
    selected = _table({"Atelectasis": "U-Ones"}, {})
    labels = _table({}, {o: "U-Zeros" for o in OBSERVATIONS if o != "Atelectasis"})
    _, checks = pc.check(TRUTH, selected, selected, labels, "official valid")
    a = checks["agreement certain labels vs truth (held-out, signs)"]
    assert (a["agree"], a["of"]) == (1, 1) and checks["observations with an expected effect"] == ["Atelectasis"]
    text = pc.write_check(tmp_path, _, checks).read_text()
    assert "chance agreement 1.00, Cohen's κ undefined (a choice is constant)" in text


def test_kind_scores_show_whether_the_runs_tell_faint_from_mimic(monkeypatch, tmp_path):
    kinds = ["none", "none", "mimic", "mimic", "faint", "faint", "clear", "clear"]
    studies = [f"patient{i:05d}/study1" for i in range(len(kinds))]
    categories = pd.DataFrame({"Atelectasis": kinds, "Edema": kinds, "Pneumonia": kinds}, index=studies)
    logits = {  # per kind (none, mimic, faint, clear): the mean logit the arm should show
        "U-Zeros": {"Atelectasis": [-3, -3, -1, 1], "Edema": [-3, -1, -1, 1], "Pneumonia": [-3, -3, -2.7, -2]},
        "U-Ones": {"Atelectasis": [-2, -1.5, 0, 1], "Edema": [-2, 0.5, 0.5, 1], "Pneumonia": [-2, -2, -1.8, -1]},
    }

    def scores(policy):  # two studies per kind at logit mean -/+ 0.5
        table = {}
        for obs, means in logits[policy].items():
            values = [m + d for m in means for d in (-0.5, 0.5)]
            table[obs] = 1 / (1 + np.exp(-np.array(values)))
        return pd.DataFrame(table, index=studies)

    monkeypatch.setattr(pc, "arm_scores", lambda arm, frame, eval_set: {0: scores(arm), 1: scores(arm)})
    table = pc.kind_scores({"U-Zeros": "U-Zeros", "U-Ones": "U-Ones"}, None, "held_out", categories)
    # the mean logit of the mean probability of two studies at m -/+ 0.5 is m (symmetric around m)
    assert table.loc[("Atelectasis", "U-Zeros"), list(pc.KINDS)].tolist() == pytest.approx([-3, -3, -1, 1], abs=1e-6)
    assert table.loc[("Atelectasis", "U-Zeros"), "faint-mimic share"] == pytest.approx(1.0)
    assert table.loc[("Atelectasis", "U-Ones"), "faint-mimic share"] == pytest.approx(0.75)
    assert table.loc[("Edema", "U-Ones"), "faint-mimic share"] == pytest.approx(0.0, abs=1e-9)
    assert table.loc[("Edema", "U-Zeros"), "studies none/mimic/faint/clear"] == "2/2/2/2"
    assert pc.premise_violated(table) == ["Atelectasis"]  # Edema's mimics score like its faint signs
    assert np.isnan(table.loc[("Pneumonia", "U-Ones"), "faint-mimic share"])  # faint only 0.2 logit above none
    assert pc.faint_unseen(table) == ["Pneumonia"]
    selected = _table({"Atelectasis": "U-Ones"}, {})
    result, checks = pc.check(TRUTH, selected, selected, selected, "official valid", kinds=table)
    assert checks["premise violated (the runs tell faint from mimic)"] == ["Atelectasis"]
    assert result.loc["Atelectasis", "faint-mimic share (U-Zeros / U-Ones)"] == "1.00 / 0.75"
    assert result.loc["No Finding", "faint-mimic share (U-Zeros / U-Ones)"] == "–"
    text = pc.write_check(tmp_path, result, checks).read_text()
    assert "**violated** for Atelectasis" in text and "**not seen** by these runs (faint - none < 0.5" in text
    assert checks["premise violated (the runs do not see faint signs)"] == ["Pneumonia"]
