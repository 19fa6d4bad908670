"""Performance by subgroup (evaluation/subgroups): seeded simulations through the functions that print the
figures, checked against independent computations (scikit-learn's AUROC, the simulations' own spread)."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from chexutils.evaluation import subgroups
from chexutils.scoring.metrics import FEW

AGE_ABOVE = 65


def simulate(rng, fade: float = 1.0, patients: int = 160, separation: float = 1.2, nf_shift: float = 0.0):
    """Patients (1-4 studies each, a shared random effect on their scores: clustered data) and study-level
    labels and scores for one finding and No Finding. The planted subgroup effect: above AGE_ABOVE a
    positive's sign is ``fade`` times as visible (its mean score shift scaled by ``fade``), and an ill study's
    No Finding score is raised by ``nf_shift`` (the model misses it more often)."""
    n_studies = rng.integers(1, 5, patients)
    pid = np.repeat(np.arange(patients), n_studies)
    age = np.repeat(rng.uniform(30, 90, patients), n_studies) + rng.uniform(0, 3, len(pid))
    effect = np.repeat(rng.normal(0, 0.8, patients), n_studies)
    y = rng.random(len(pid)) < 0.35
    old = age > AGE_ABOVE
    shift = np.where(old, fade * separation, separation)
    score = effect + rng.normal(0, 1, len(pid)) + y * shift
    nf = effect + rng.normal(0, 1, len(pid)) - 1.0 * y + nf_shift * (y & old)
    study = [f"s{i}" for i in range(len(pid))]
    labels = pd.DataFrame({"Edema": y.astype(float), "No Finding": (~y).astype(float)}, index=study)
    scores = pd.DataFrame({"Edema": score, "No Finding": nf}, index=study)
    patients_of = pd.Series([f"p{p}" for p in pid], index=study)
    groups = pd.Series(np.where(old, "older", "younger"), index=study)
    return labels, scores, patients_of, groups


def test_the_gap_is_the_difference_of_independently_computed_aurocs():
    labels, scores, pts, groups = simulate(np.random.default_rng(1), fade=0.5)
    gap = subgroups.subgroup_gaps(labels, scores, pts, groups, ["Edema"], reference="younger").iloc[0]
    auc = {
        g: roc_auc_score(labels.loc[groups == g, "Edema"], scores.loc[groups == g, "Edema"])
        for g in ("older", "younger")
    }
    assert gap["gap"] == pytest.approx(auc["older"] - auc["younger"], abs=1e-12)
    assert gap["ci_low"] < gap["gap"] < gap["ci_high"]


@pytest.mark.parametrize(("fade", "want"), [(1.0, "size"), (0.1, "power")])
def test_the_clustered_gap_test_finds_the_planted_effect_and_is_silent_without_it(fade, want):
    """300 seeded data sets of clustered studies. Without the effect the gap test rejects at its nominal 5%
    (within 3 Monte-Carlo SEs: 0.05 +- 0.038) and its SE matches the gaps' own spread over the simulations
    (the independent check that patients are accounted for); with signs fainter above 65 it finds the gap
    nearly always, with the right sign."""
    rng = np.random.default_rng(2024)
    gaps, ses, rejected = [], [], []
    for _ in range(300):
        labels, scores, pts, groups = simulate(rng, fade=fade)
        row = subgroups.subgroup_gaps(labels, scores, pts, groups, ["Edema"], reference="younger").iloc[0]
        gaps.append(row["gap"])
        ses.append(row["se"])
        rejected.append(row["p_value"] < 0.05)
    rate = np.mean(rejected)
    if want == "size":
        assert 0.012 <= rate <= 0.088
        assert np.mean(ses) / np.std(gaps, ddof=1) == pytest.approx(1.0, abs=0.15)
        assert abs(np.mean(gaps)) < 3 * np.std(gaps) / np.sqrt(len(gaps))
    else:
        assert rate >= 0.9 and np.mean(gaps) < -0.1


@pytest.mark.parametrize(("nf_shift", "want"), [(0.0, "size"), (1.0, "power")])
def test_underdiagnosis_rate_and_its_gap(nf_shift, want):
    """The rate per group equals the direct count; the clustered gap test holds its size and finds a planted
    excess of ill older patients called No Finding."""
    rng = np.random.default_rng(7)
    rejected, gaps = [], []
    for i in range(200):
        labels, scores, pts, groups = simulate(rng, nf_shift=nf_shift)
        table = subgroups.underdiagnosis(labels, scores, pts, groups, threshold=0.0, reference="younger")
        row = table.set_index("group").loc["older"]
        if i == 0:
            ill = (labels["No Finding"] == 0) & (groups == "older")
            assert row["ill studies"] == ill.sum()
            assert row["underdiagnosis"] == pytest.approx((scores.loc[ill, "No Finding"] >= 0).mean())
            assert row["ci_low"] <= row["underdiagnosis"] <= row["ci_high"]
        rejected.append(row["p_value"] < 0.05)
        gaps.append(row["gap"])
    rate = np.mean(rejected)
    if want == "size":
        assert 0.005 <= rate <= 0.1
    else:
        assert rate >= 0.9 and np.mean(gaps) > 0.1


def test_small_groups_get_no_interval_and_tiny_ones_no_value():
    labels, scores, pts, groups = simulate(np.random.default_rng(3), patients=200)
    groups = groups.copy()
    positives = labels.index[labels["Edema"] == 1]
    negatives = labels.index[labels["Edema"] == 0]
    groups[positives[:5]] = "rare"
    groups[negatives[:40]] = "rare"
    groups[positives[5:7]] = "tiny"
    groups[negatives[40:80]] = "tiny"
    table = subgroups.subgroup_table(labels, scores, pts, groups, {"Edema": 0.5}, ["Edema"]).set_index("group")
    assert table.loc["rare", "shown"] == FEW and np.isnan(table.loc["rare", "ci_low"])
    assert FEW in table.loc["rare", "text"] and "[5+ 40−" in table.loc["rare", "text"]
    assert table.loc["tiny", "shown"] == "n/a" and np.isnan(table.loc["tiny", "auroc"])
    assert np.isnan(table.loc["tiny", "sensitivity"])  # 2 positives: below the point floor
    big = table.loc["older"]
    assert big["ci_low"] < big["auroc"] < big["ci_high"]
    y = labels.loc[groups == "older", "Edema"] == 1
    called = scores.loc[groups == "older", "Edema"] >= 0.5
    assert big["sensitivity"] == pytest.approx(called[y].mean())
    gaps = subgroups.subgroup_gaps(labels, scores, pts, groups, ["Edema"]).set_index("group")
    assert np.isnan(gaps.loc["rare", "gap"]) and "no test" in gaps.loc["rare", "note"]
    assert gaps.loc["rare", "shown"] == FEW and gaps.loc["tiny", "shown"] == "n/a"  # the worse of the two groups


def test_groups_by_age_band_sex_and_view():
    assert list(subgroups.age_band([18, 40, 59.9, 60, 75, 90, np.nan])) == [
        "<40",
        "40-59",
        "40-59",
        "60-74",
        "75+",
        "75+",
        "",
    ]
    frame = pd.DataFrame(
        {
            "study": ["a", "a", "b", "c"],
            "patient": ["p1", "p1", "p2", "p3"],
            "Sex": ["Male", "Male", "Female", "Female"],
            "Age": [70, 70, 30, 50],
            "frontal": [False, True, True, False],
            "AP/PA": ["", "AP", "PA", ""],
        }
    )
    assert subgroups.study_groups(frame, "view").to_dict() == {"a": "AP", "b": "PA", "c": "lateral only"}
    assert subgroups.study_groups(frame, "age band").to_dict() == {"a": "60-74", "b": "<40", "c": "40-59"}
    assert subgroups.study_groups(frame, "sex").to_dict() == {"a": "Male", "b": "Female", "c": "Female"}
