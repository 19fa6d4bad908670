"""The phantom's expected answer: hand-derived pair counts, targets from report rates, the sidecar verdicts."""

import numpy as np
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
    assert targets["U-Zeros"] == pytest.approx(
        {"none": 0.0, "clear": 0.5, "faint": 0.0375, "mimic": 0.0375, ex.VIA_CHILD: 0.0}
    )
    assert targets["U-Ones"]["faint"] == pytest.approx(0.6375) and targets["U-Ones"]["clear"] == 0.5
    ignored = ex.expected_targets(model, blank="ignore", uncertain=0.6, accuracy=0.75)  # blanks leave the loss
    assert ignored["U-Zeros"]["clear"] == 1.0 and ignored["U-Ones"]["faint"] == pytest.approx(0.6375 / 0.7)
    with pytest.raises(ValueError, match="blank"):
        ex.expected_targets(model, blank="zero")


@pytest.fixture(scope="module")
def answer():
    return ex.expected_answer()


def test_phantom_answer_over_the_family_of_learners(answer):
    controls = ex.controls(answer)
    # the sharp logit learner barely sees U-Zeros' collapse (Atelectasis +0.007 at logit SD 0.5), so no
    # observation's smallest effect is large: no positive control on the hand-set phantom
    assert controls["primary_positive_control"] is None and controls["positive_controls"] == []
    assert {"No Finding", "Support Devices"} <= set(controls["null_controls"])
    atelectasis = answer["Atelectasis"]
    assert atelectasis.verdict == ex.LEARNER_DEPENDENT and atelectasis.smallest[0] == "logit 0.5"
    assert min(atelectasis.deltas[x.name] for x in ex.LEARNERS if x.scale == "probability") >= ex.LARGE
    assert atelectasis.targets["U-Zeros"]["faint"] < 0.05  # few equivocal studies are reported certain
    assert answer["No Finding"].deltas == {x.name: 0.0 for x in ex.LEARNERS}
    # the parent's clear positives are mostly blank: U-Ones ranks equivocal above them, and every learner
    # favours U-Zeros for Lung Opacity, though the blurriest only by about 0.01
    ecm = answer["Enlarged Cardiomediastinum"].targets["U-Ones"]
    assert ecm["faint"] > ecm["clear"] and max(answer["Lung Opacity"].deltas.values()) < 0
    assert answer["Lung Opacity"].shares[ex.VIA_CHILD] > 0.02  # parents through faint children only
    # no observation of the hand-set phantom has an expected policy once the logit learners count
    assert {e.verdict for e in answer.values()} == {ex.NO_DIFFERENCE, ex.LEARNER_DEPENDENT}


def test_q_above_one_half_does_not_decide(answer):
    # Pneumonia's uncertain labels are mostly mimics (q = 0.3), yet U-Ones wins for every probability-scale learner.
    from chexutils.phantom.label_model import PLANTED_Q

    probability = [x for x in ex.LEARNERS if x.scale == "probability"]
    assert PLANTED_Q["Pneumonia"] < 0.5 and min(answer["Pneumonia"].deltas[x.name] for x in probability) > 0.1
    assert PLANTED_Q["Lung Opacity"] > 0.5 and max(answer["Lung Opacity"].deltas.values()) < 0


def test_summary_is_json_ready_and_complete(answer):
    import json

    record = json.loads(json.dumps(ex.summary(answer)))
    assert record["expected_better_policy"]["Atelectasis"] == ex.LEARNER_DEPENDENT
    assert set(record["derivation"]["Edema"]["delta_by_learner"]) == {x.name for x in ex.LEARNERS}
    assert record["derivation"]["Atelectasis"]["smallest_effect"]["learner"] == "logit 0.5"


def test_noise_on_the_logit_can_reverse_the_probability_scale_answer():
    # U-Zeros: equivocal 0.02, clear 0.5; U-Ones: equivocal 0.45, clear 0.5 (none 0 for both).
    # Probability scale: U-Zeros' 0.02 sits inside the noise around none's 0 (faint x none pairs near coin
    # flips, the collapse) while U-Ones keeps 0.45 apart from 0: U-Ones wins (+0.044 to +0.076).
    # Logit (none floored at 0.005): U-Zeros' 0.02 is 1.4 logits above none and 3.9 below clear, so it
    # sorts every kind; U-Ones' 0.45 is 0.2 logits below clear, so clear x mimic pairs become coin flips:
    # U-Zeros wins (-0.065 at SD 0.5). The two noise scales disagree in sign: no expected policy.
    shares = {"none": 0.5, "clear": 0.1, "faint": 0.1, "mimic": 0.3}
    targets = {p: t | {ex.VIA_CHILD: 0.0} for p, t in _targets(0.5, 0.02, 0.45).items()}
    deltas = ex.family_deltas(shares, targets)
    assert min(deltas[x.name] for x in ex.LEARNERS if x.scale == "probability") >= 0.04
    assert deltas["logit 0.5"] == pytest.approx(-0.065, abs=0.002) and deltas["logit 1"] <= -ex.MATERIAL
    assert ex.verdict(deltas.values()) == ex.LEARNER_DEPENDENT
    # judged on the probability scale alone (the answer before the family) it would have been U-Ones
    assert ex.verdict(deltas[x.name] for x in ex.LEARNERS if x.scale == "probability") == "U-Ones"


def test_logit_scale_floors_the_targets():
    assert ex.on_scale(0.0, "logit") == pytest.approx(np.log(ex.TARGET_FLOOR / (1 - ex.TARGET_FLOOR)))
    assert ex.on_scale(0.3) == 0.3
    with pytest.raises(ValueError, match="scale"):
        ex.on_scale(0.3, "probit")


def test_positive_control_is_chosen_by_its_smallest_effect():
    # A: huge on the probability scale but small for one logit learner; B: moderate for every learner.
    def made(deltas):
        return ex.Expected(SHARES, {}, deltas, ex.verdict(deltas.values()), "")

    names = [x.name for x in ex.LEARNERS]
    a = made(dict(zip(names, [0.30, 0.30, 0.30, 0.02, 0.10, 0.20])))
    b = made(dict(zip(names, [0.07, 0.08, 0.08, 0.06, 0.07, 0.07])))
    controls = ex.controls({"A": a, "B": b})
    assert controls["positive_controls"] == ["B"] and controls["primary_positive_control"] == "B"
    assert a.smallest == ("logit 0.5", 0.02) and a.verdict == "U-Ones"


def test_measured_noise_answer():
    """The expected answer of the measured-noise phantom: report labels depend on the truth only."""
    answer = ex.expected_answer(label_noise="measured")
    assert answer["Atelectasis"].verdict == "U-Ones" and answer["Pneumonia"].verdict == "U-Ones"
    assert answer["Consolidation"].verdict == "U-Zeros"
    assert ex.controls(answer)["primary_positive_control"] == "Atelectasis"  # smallest effect +0.064 (logit 2)
    # a clear and a faint study have the same target (the truth decides the label); U-Ones adds P(-1 | truth)
    t = answer["Edema"].targets
    assert t["U-Zeros"]["clear"] == pytest.approx(31 / 78) and t["U-Ones"]["clear"] == pytest.approx(44 / 78)
    assert t["U-Zeros"]["none"] == pytest.approx(57 / 422) and t["U-Ones"]["none"] == pytest.approx(69 / 422)
    with pytest.raises(ValueError, match="label_noise"):
        ex.expected_answer(label_noise="real")
