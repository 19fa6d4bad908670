"""Decision rules at their edges: the per-label choice's floor (29/30/31) and Holm verdict, the sweep
passing each policy's arm and the patients on, agreement counted only where both choices are defined,
the primary positive control by its weakest effect, the power model's unit-variance correlated noise,
the readers' specificity difference, calibration refused on any shared image, the display floors."""

import numpy as np
import pandas as pd
import pytest
from conftest import write_chexpert

from chexutils.core.errors import DataError
from chexutils.core.labels import OBSERVATIONS
from chexutils.core.rundir import OFFICIAL_VALID, RunDir
from chexutils.data.chexpert import CSV_COLUMNS
from chexutils.evaluation import calibration, policy_choice, policy_sweep, power, readers
from chexutils.evaluation import phantom_check as pc
from chexutils.evaluation.evaluate import RunScores, read_labels_csv
from chexutils.phantom import expected as ex
from chexutils.scoring.metrics import FEW, NA, shown
from chexutils.scoring.predict import write_predictions
from chexutils.scoring.stats import holm

DELTA = policy_choice.DELTA


def comparison(rows: dict) -> pd.DataFrame:
    """A compare_arms()-shaped table: {observation: (positives, negatives, p_value, delta)}."""
    table = pd.DataFrame.from_dict(
        {
            obs: {"positives": pos, "negatives": neg, "p_value": p, "se": 0.02, DELTA: delta}
            for obs, (pos, neg, p, delta) in rows.items()
        },
        orient="index",
    )
    table.index.name = "observation"
    return table


def test_eligibility_floor_is_at_least_30_in_the_smaller_class_on_both_sides():
    table = comparison(
        {
            "Edema": (29, 300, 0.001, 0.05),
            "Atelectasis": (30, 300, 0.001, 0.05),
            "Cardiomegaly": (31, 300, 0.001, 0.05),
            "Consolidation": (300, 29, 0.001, 0.05),  # the smaller class may be the negatives
            "Pleural Effusion": (300, 30, 0.001, 0.05),
        }
    )
    choice = policy_choice.choose(table, None, "official-valid")
    assert policy_choice.MIN_POSITIVES == 30
    assert choice["eligible"].to_dict() == {
        "Edema": False,
        "Atelectasis": True,
        "Cardiomegaly": True,
        "Consolidation": False,
        "Pleural Effusion": True,
    }
    assert choice.loc["Edema", "reason"] == "29 in the smaller class < 30"
    assert choice.loc["Atelectasis", "reason"] == "" and choice.loc["Atelectasis", "mapping"] == "U-Ones"
    assert choice.loc["Edema", "mapping"] == policy_choice.DEFAULT_POLICY
    assert choice.loc["Edema", "verdict"].startswith("not compared (29 in the smaller class < 30)")


def test_verdict_follows_holms_adjusted_p_not_the_raw_p():
    # raw p 0.01, 0.03, 0.04 (all < 0.05); Holm over 3: 0.03, max(0.03, 2 x 0.03) = 0.06, max(0.06, 0.04) = 0.06
    table = comparison(
        {
            "Edema": (100, 200, 0.01, 0.06),
            "Atelectasis": (100, 200, 0.03, -0.05),
            "Cardiomegaly": (100, 200, 0.04, 0.04),
        }
    )
    choice = policy_choice.choose(table, None, "official-valid")
    np.testing.assert_allclose(choice["p_holm"], [0.03, 0.06, 0.06])
    np.testing.assert_allclose(choice["p_holm"], holm([0.01, 0.03, 0.04]))
    assert choice["mapping"].to_dict() == {"Edema": "U-Ones", "Atelectasis": "U-Zeros", "Cardiomegaly": "U-Zeros"}
    assert choice.loc["Edema", "verdict"] == "U-Ones (Holm p 0.03)"
    for obs in ("Atelectasis", "Cardiomegaly"):  # raw p < 0.05, adjusted not: no verdict, the default
        assert choice.loc[obs, "verdict"].startswith(policy_choice.NO_DIFFERENCE), obs


def test_choice_view_hides_the_numbers_below_the_ci_floor_of_10_on_both_sides():
    table = comparison(
        {"Edema": (9, 300, 0.2, 0.01), "Atelectasis": (10, 300, 0.2, 0.01), "Cardiomegaly": (300, 11, 0.2, 0.01)}
    )
    table["ci_low"], table["ci_high"] = -0.02, 0.04
    assert policy_choice.below_floor(table).to_dict() == {"Edema": True, "Atelectasis": False, "Cardiomegaly": False}
    view = policy_sweep.choice_view(policy_choice.choose(table, None, "official-valid"))
    assert view.loc["Edema", [DELTA, "ci_low", "ci_high", "p_value"]].isna().all()
    assert view.loc[["Atelectasis", "Cardiomegaly"], [DELTA, "ci_low", "ci_high", "p_value"]].notna().all().all()
    assert view["verdict"].notna().all() and (view["positives"] == [9, 10, 300]).all()  # counts and verdict stay


def _arm_scores(y: pd.Series, noise: float, seeds, offset: int) -> dict:
    """{seed: study x Edema scores}: label + N(0, noise) per seed."""
    return {
        k: pd.DataFrame({"Edema": y + np.random.default_rng(offset + k).normal(0, noise, len(y))}, index=y.index)
        for k in seeds
    }


def test_choose_policies_passes_each_policys_own_arm():
    studies = [f"patient{i // 2:05d}/study{1 + i % 2}" for i in range(300)]
    y = pd.Series((np.random.default_rng(0).random(300) < 0.4).astype(float), index=studies)
    sets = {
        "official-valid": {
            "labels": pd.DataFrame({"Edema": y}),
            "groups": pd.Series([s.split("/")[0] for s in studies], index=studies),
            "arms": {"U-Zeros": _arm_scores(y, 2.0, (0, 1), 10), "U-Ones": _arm_scores(y, 0.3, (0, 1), 20)},
        }
    }
    choice = policy_sweep.choose_policies(sets, None, n_resamples=100)["official-valid"]
    row = choice.loc["Edema"]
    assert row["U-Ones mean"] > 0.9 > 0.7 > row["U-Zeros mean"]  # each arm under its own name
    assert row[DELTA] == pytest.approx(row["U-Ones mean"] - row["U-Zeros mean"]) and row[DELTA] > 0.2
    assert row["mapping"] == "U-Ones" and row["patients"] == 150


def _valid_rows(patients: int = 12, studies: int = 2) -> pd.DataFrame:
    """A valid.csv with ``studies`` single-view studies per patient, labels drawn at random (seeded)."""
    rng = np.random.default_rng(4)
    rows = []
    for p in range(1, patients + 1):
        for s in range(1, studies + 1):
            row = {
                "Path": f"CheXpert-v1.0-small/valid/patient{p:05d}/study{s}/view1_frontal.jpg",
                "Sex": "Female",
                "Age": "50",
                "Frontal/Lateral": "Frontal",
                "AP/PA": "AP",
            }
            row.update({obs: str(float(rng.random() < 0.5)) for obs in OBSERVATIONS})
            rows.append(row)
    return pd.DataFrame(rows, columns=list(CSV_COLUMNS))


def test_selection_sets_carry_the_patient_of_every_study(tmp_path):
    data_dir = tmp_path / "data"
    valid_csv = write_chexpert(data_dir, _valid_rows(), "valid.csv")
    write_chexpert(data_dir, _valid_rows().head(1), "train.csv", images=False)  # find_chexpert looks for it
    frame = read_labels_csv(valid_csv, data_dir)
    arms = {}
    for policy, seed in (("U-Zeros", 1), ("U-Ones", 2)):
        run = tmp_path / "runs" / policy
        run.mkdir(parents=True)
        probs = np.random.default_rng(seed).random((len(frame), len(OBSERVATIONS)))
        write_predictions(frame, probs, RunDir(run).predictions(OFFICIAL_VALID))
        arms[policy] = {0: run}
    sets = policy_sweep.selection_sets(arms, valid_csv.parent, data_dir)
    groups = sets["official-valid"]["groups"]
    assert groups is not None
    expected = {f"patient{p:05d}/study{s}": f"patient{p:05d}" for p in range(1, 13) for s in (1, 2)}
    assert groups.to_dict() == expected
    choice = policy_sweep.choose_policies(sets, None, n_resamples=50)["official-valid"]
    assert (choice["patients"] == 12).all()  # clustered by patient: 12 patients, 24 studies


def test_agreement_counts_only_observations_defined_under_both_criteria():
    first = pd.Series({"a": "U-Ones", "b": "U-Zeros", "c": "U-Ones", "d": "U-Ones", "e": "undefined"})
    second = pd.Series({"a": "U-Ones", "b": "U-Ones", "c": "undefined", "d": "undefined", "e": "U-Ones"})
    result = pc.agreement(first, second)
    assert (result["agree"], result["of"]) == (1, 2) and result["rate"] == pytest.approx(0.5)
    none_defined = pc.agreement(first[["c", "d"]], second[["c", "d"]])
    assert none_defined["of"] == 0 and np.isnan(none_defined["rate"])


def _expected(deltas: dict, prevalence: float = 0.2) -> ex.Expected:
    shares = {"none": 1 - prevalence, "clear": prevalence, "faint": 0.0, "mimic": 0.0}
    return ex.Expected(shares, {}, deltas, "U-Ones", "test")


def test_primary_positive_control_has_the_largest_smallest_effect():
    """Both are positive controls (|delta| >= LARGE at every noise SD); the primary is the one whose
    weakest effect is strongest (A: 0.06 at its worst, B: 0.08), not the one with the largest peak (A)."""
    answer = {"A": _expected({0.1: 0.30, 0.3: 0.06}), "B": _expected({0.1: 0.09, 0.3: 0.08})}
    assert ex.LARGE <= 0.06
    controls = ex.controls(answer)
    assert sorted(controls["positive_controls"]) == ["A", "B"]
    assert controls["primary_positive_control"] == "B"


def test_power_model_noise_has_unit_variance_and_the_stated_correlation(monkeypatch):
    """With every target 0 and noise SD 1 the scores handed to the AUROC are the noise itself: each arm's
    must be N(0, 1) and the two correlated by ``correlation`` (sqrt(c) shared + sqrt(1 - c) own)."""
    seen = []
    monkeypatch.setattr(power, "_auroc", lambda y, s: seen.append(np.array(s)) or 0.5)
    shares = {"none": 0.5, "clear": 0.5, "faint": 0.0, "mimic": 0.0}
    targets = {p: dict.fromkeys(ex.KINDS, 0.0) for p in ex.COMPARED_POLICIES}
    power.paired_delta_sd(shares, targets, noise_sd=1.0, correlation=0.5, n_studies=20_000, reps=3, seed=1)
    assert len(seen) == 6
    for a, b in zip(seen[0::2], seen[1::2]):
        assert np.var(a) == pytest.approx(1.0, abs=0.04) and np.var(b) == pytest.approx(1.0, abs=0.04)
        assert np.corrcoef(a, b)[0, 1] == pytest.approx(0.5, abs=0.03)


def test_reader_differences_compare_like_with_like():
    """4 positives, 6 negatives; the reader: TP 3 of 4 (sens .75), FP 1 of 6 (spec 5/6). The model's
    scores, positives 0.9 0.8 0.4 0.3, negatives 0.7 0.6 0.5 0.2 0.1 0.05: at FPR <= 1/6 its best TPR
    is .5 (thresholds 0.8 and 0.7); at TPR >= .75 its best specificity is 3/6 (threshold 0.4, with
    0.7 0.6 0.5 above it). So sens_delta = .5 - .75 and spec_delta = .5 - 5/6 (not .5 - .75)."""
    index = [f"s{i}" for i in range(10)]
    labels = pd.DataFrame({"Edema": [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]}, index=index)
    scores = pd.DataFrame({"Edema": [0.9, 0.8, 0.4, 0.3, 0.7, 0.6, 0.5, 0.2, 0.1, 0.05]}, index=index)
    reads = {"r": pd.DataFrame({"Edema": [1, 1, 1, 0, 1, 0, 0, 0, 0, 0]}, index=index)}
    row = readers.score_readers(labels, scores, reads, n_resamples=50).iloc[0]
    assert row["sensitivity"] == pytest.approx(0.75) and row["specificity"] == pytest.approx(5 / 6)
    assert row["model_sens_at_reader_spec"] == pytest.approx(0.5)
    assert row["model_spec_at_reader_sens"] == pytest.approx(0.5)
    assert row["sens_delta"] == pytest.approx(0.5 - 0.75)
    assert row["spec_delta"] == pytest.approx(0.5 - 5 / 6)


def _run_of(paths) -> RunScores:
    labels = pd.DataFrame({"Edema": 1.0}, index=pd.Index(paths, name="Path"))
    return RunScores("r", labels, labels * 0.5, labels, labels * 0.5)


def test_scaling_is_refused_on_a_set_sharing_any_image_with_its_fitting_set():
    fitted = frozenset({"valid/a.jpg", "valid/b.jpg", "valid/c.jpg"})
    with pytest.raises(DataError, match=r"held-out: 1 of its 4 images \(first 'valid/c.jpg'\) are in 'official valid'"):
        calibration.check_disjoint(fitted, "official valid", _run_of(["valid/c.jpg", "x/d", "x/e", "x/f"]), "held-out")
    with pytest.raises(DataError, match=r"held-out: 3 of its 3 images"):
        calibration.check_disjoint(fitted, "official valid", _run_of(sorted(fitted)), "held-out")
    calibration.check_disjoint(fitted, "official valid", _run_of(["x/d", "x/e"]), "held-out")  # disjoint: fine


@pytest.mark.parametrize("smaller, how", [(2, NA), (3, FEW), (4, FEW), (9, FEW), (10, "with CI"), (11, "with CI")])
def test_display_floors_on_both_sides(smaller, how):
    assert shown(smaller, 500) == how
    assert shown(500, smaller) == (how if how != FEW else "few negatives")
