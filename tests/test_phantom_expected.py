"""The phantom's expected answer: hand-derived pair counts, targets from report rates, the sidecar verdicts."""

import pytest

from chexutils.phantom import expected as ex
from chexutils.phantom.label_model import ObservationModel

# none 0.5, clear 0.2, faint 0.2, mimic 0.1: positives 0.4, negatives 0.6, 0.24 pair mass in all.
SHARES = {"none": 0.5, "clear": 0.2, "faint": 0.2, "mimic": 0.1}
SHARP = 1e-6  # noise SD so small that only the ranking of the targets counts


def _targets(clear, zeros_equivocal, ones_equivocal):
    def kinds(e):
        return {"none": 0.0, "clear": clear, "faint": e, "mimic": e}

    return {"U-Zeros": kinds(zeros_equivocal), "U-Ones": kinds(ones_equivocal)}


def test_inversion_when_e1_exceeds_mc_gives_u_zeros():
    # U-Zeros ranks none < equivocal (0.1) < clear (0.3): clear x none 0.10, clear x mimic 0.02,
    # faint x none 0.10 all won, faint x mimic 0.02 tied (0.01) -> 0.23 / 0.24.
    # U-Ones puts equivocal (0.7) above clear: clear x mimic lost -> 0.21 / 0.24.
    targets = _targets(clear=0.3, zeros_equivocal=0.1, ones_equivocal=0.7)
    assert ex.auroc_from_kinds(SHARES, targets["U-Zeros"], SHARP) == pytest.approx(0.23 / 0.24)
    assert ex.auroc_from_kinds(SHARES, targets["U-Ones"], SHARP) == pytest.approx(0.21 / 0.24)
    assert ex.policy_delta(SHARES, targets, SHARP) == pytest.approx(-0.02 / 0.24)
    assert ex.verdict([ex.policy_delta(SHARES, targets, SHARP)]) == "U-Zeros"


def test_collapse_when_e0_is_zero_gives_u_ones():
    # U-Zeros: equivocal target 0 = none's, so faint x none ties (0.05 instead of 0.10) -> 0.18 / 0.24;
    # U-Ones with e1 = 0.2 < mc = 0.3 ranks none < equivocal < clear -> 0.23 / 0.24.
    targets = _targets(clear=0.3, zeros_equivocal=0.0, ones_equivocal=0.2)
    assert ex.policy_delta(SHARES, targets, SHARP) == pytest.approx(0.05 / 0.24)
    assert ex.verdict([ex.policy_delta(SHARES, targets, t) for t in ex.NOISE_SDS]) == "U-Ones"


def test_same_ranking_ties_in_the_large_data_limit():
    targets = _targets(clear=0.9, zeros_equivocal=0.1, ones_equivocal=0.7)
    assert ex.policy_delta(SHARES, targets, SHARP) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(
    "deltas, expected",
    [
        ([0.002, -0.004, 0.009], ex.NO_DIFFERENCE),
        ([0.02, 0.05, 0.011], "U-Ones"),
        ([-0.06, -0.02, -0.01], "U-Zeros"),
        ([-0.06, -0.02, 0.0], ex.SETTING_DEPENDENT),
        ([-0.004, 0.03, 0.05], ex.SETTING_DEPENDENT),
    ],
)
def test_verdict_bands(deltas, expected):
    assert ex.verdict(deltas) == expected


def test_expected_targets_from_report_rates():
    # q = 0.2 / (0.2 + 0.6) = 0.25; certain positive share of the zone = 0.1 * (0.75 * 0.25 + 0.25 * 0.75) = 0.0375
    model = ObservationModel(clear=0.1, faint=0.2, mimic=0.6, zone_certain=0.1, mention_clear=0.5, mention_none=0.4)
    targets = ex.expected_targets(model, uncertain=0.6, accuracy=0.75)
    assert targets["U-Zeros"] == pytest.approx({"none": 0.0, "clear": 0.5, "faint": 0.0375, "mimic": 0.0375})
    assert targets["U-Ones"]["faint"] == pytest.approx(0.6375) and targets["U-Ones"]["clear"] == 0.5
    ignored = ex.expected_targets(model, blank="ignore", uncertain=0.6, accuracy=0.75)  # blanks leave the loss
    assert ignored["U-Zeros"]["clear"] == 1.0 and ignored["U-Ones"]["faint"] == pytest.approx(0.6375 / 0.7)
    with pytest.raises(ValueError, match="blank"):
        ex.expected_targets(model, blank="zero")


@pytest.fixture(scope="module")
def answer():
    return ex.expected_answer()


def test_phantom_answer_has_large_controls_and_nulls(answer):
    controls = ex.controls(answer)
    assert controls["primary_positive_control"] == "Atelectasis"
    assert set(controls["positive_controls"]) >= {"Atelectasis", "Pneumonia"}
    assert {"No Finding", "Support Devices"} <= set(controls["null_controls"])
    atelectasis = answer["Atelectasis"]
    assert atelectasis.verdict == "U-Ones" and min(atelectasis.deltas.values()) >= ex.LARGE
    assert atelectasis.targets["U-Zeros"]["faint"] < 0.05  # few equivocal studies are reported certain
    assert answer["No Finding"].deltas == {t: 0.0 for t in ex.NOISE_SDS}
    # the parent's clear positives are mostly blank: U-Ones ranks equivocal above them
    ecm = answer["Enlarged Cardiomediastinum"].targets["U-Ones"]
    assert ecm["faint"] > ecm["clear"] and answer["Lung Opacity"].verdict == "U-Zeros"


def test_q_above_one_half_does_not_decide(answer):
    # Pneumonia's uncertain labels are mostly mimics (q = 0.3), yet U-Ones is expected to win.
    from chexutils.phantom.label_model import PLANTED_Q

    assert PLANTED_Q["Pneumonia"] < 0.5 and answer["Pneumonia"].verdict == "U-Ones"
    assert PLANTED_Q["Lung Opacity"] > 0.5 and answer["Lung Opacity"].verdict == "U-Zeros"


def test_summary_is_json_ready_and_complete(answer):
    import json

    record = json.loads(json.dumps(ex.summary(answer)))
    assert record["expected_better_policy"]["Atelectasis"] == "U-Ones"
    assert set(record["derivation"]["Edema"]["delta_by_noise_sd"]) == {str(t) for t in ex.NOISE_SDS}
