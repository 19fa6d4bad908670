"""The phantom check: Holm by hand, Wilson agreement, control verdicts on hand-made choice tables."""

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest

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


def _table(decisions: dict, signs: dict) -> pd.DataFrame:
    rows = {
        o: {
            "U-Ones minus U-Zeros": 0.1 if signs.get(o, "U-Ones") == "U-Ones" else -0.1,
            "p_holm": 0.001 if decisions.get(o, pc.NO_DETECTABLE) != pc.NO_DETECTABLE else 0.5,
            "decision": decisions.get(o, pc.NO_DETECTABLE),
            "sign": signs.get(o, "U-Ones"),
            "n": 100,
        }
        for o in OBSERVATIONS
    }
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
    assert checks["positive control recovered"] and checks["null controls not flagged"]
    assert checks["studies needed for the positive control"] == 80 and checks["studies in the selection set"] == 100
    assert table.loc["Atelectasis", "studies needed (power 0.8, Holm)"] == 80
    assert checks["agreement certain labels vs truth (held-out, signs)"]["agree"] == 13
    pc.enforce(checks, strict=True)
    path = pc.write_check(tmp_path, table, checks)
    text = path.read_text()
    assert "PASS: positive control Atelectasis" in text and "13 of 14" in text and "(100 studies" in text
    assert json.loads((tmp_path / pc.CHECK_JSON).read_text())["positive control recovered"] is True
    assert "control needs 80 for 80% power" in text
    unsized = pc.check(TRUTH, selected, selected, labels, "official valid", sizing=sizing * math.inf)
    text = pc.write_check(tmp_path, *unsized).read_text()  # 2 seeds per policy: no study count suffices
    assert "control needs more than any study count gives with these seeds per policy" in text


def test_check_fails_on_a_missed_control_or_a_flagged_null():
    selected = _table({"Atelectasis": pc.NO_DETECTABLE, "No Finding": "U-Zeros"}, {"No Finding": "U-Zeros"})
    _, checks = pc.check(TRUTH, selected, selected, selected, "held-out truth")
    assert not checks["positive control recovered"] and checks["null controls flagged"] == ["No Finding"]
    pc.enforce(checks, strict=False)
    with pytest.raises(AssertionError, match="positive control recovered, null controls not flagged"):
        pc.enforce(checks, strict=True)


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
