"""The phantom's second site (phantom/second_site) and cross-site evaluation (evaluation/external, site_policy).

The three known answers are checked with a cheap but real learner on the pixels
(training/pixel_learner: logistic regression on 20x20 downsampled images, per observation), not a
network: a network would take minutes per fit on 2 cores and the grid needs three fits per shift.
Images are 40x40 and the sites a few hundred patients, seeded, so every figure is deterministic;
the tolerances are several standard errors (each from the clustered DeLong interval)."""

import gzip
import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

import chexutils.data  # noqa: F401  registers the data sets
from chexutils.core.errors import DataError
from chexutils.core.labels import OBSERVATIONS as OBS_ALL
from chexutils.core.rundir import RunDir, check_eval_set, external_set
from chexutils.data import mimic
from chexutils.data.datasets import get_dataset
from chexutils.data.demographics import add_demographics
from chexutils.evaluation import external, site_policy, subgroups
from chexutils.phantom import read_truth
from chexutils.phantom.generate import generate_phantom
from chexutils.phantom.render import render_image
from chexutils.phantom.second_site import PATIENTS_CSV, SITE_FOLDER, apply_look, generate_second_site
from chexutils.scoring.predict import write_predictions
from chexutils.scoring.stats import holm

SIZE = (40, 40)
FEATURES = 20
OBSERVATIONS = ("Cardiomegaly", "Edema", "Pleural Effusion", "Support Devices", "No Finding")
SOURCES = {"site 1": ["site 1"], "site 2": ["site 2"], "pooled": ["site 1", "site 2"]}


@pytest.fixture(scope="module")
def site_one(tmp_path_factory):
    out = tmp_path_factory.mktemp("site1")
    generate_phantom(out, patients=200, valid_patients=250, size=SIZE, seed=0, workers=1)
    return out


def _grid(site_one, out, shift):
    root = generate_second_site(
        out, patients=200, validate_patients=3, test_patients=120, size=SIZE, seed=0, shift=shift
    )
    sites = {
        "site 1": external.load_site("site 1", "chexpert", site_one),
        "site 2": external.load_site("site 2", "mimic-cxr-jpg", root),
    }
    features = external.site_features(sites, FEATURES)
    scores = external.fit_sources(sites, SOURCES, features, observations=OBSERVATIONS)
    return sites, features, scores, external.cross_site(scores, sites, OBSERVATIONS)


@pytest.fixture(scope="module")
def same_look(site_one, tmp_path_factory):
    return _grid(site_one, tmp_path_factory.mktemp("shift0"), 0.0)


@pytest.fixture(scope="module")
def shifted(site_one, tmp_path_factory):
    return _grid(site_one, tmp_path_factory.mktemp("shift1"), 1.0)


def test_the_second_site_is_a_mimic_release_with_its_own_patients_truth_and_demographics(same_look):
    sites = same_look[0]
    site2 = sites["site 2"]
    root = site2.root
    with gzip.open(root / mimic.SPLIT_CSV, "rt") as handle:
        assert handle.readline().strip() == ",".join(mimic.SPLIT_COLUMNS)
    with gzip.open(root / mimic.LABELS_CSV, "rt") as handle:
        header, first = handle.readline(), handle.readline()
    assert header.strip() == ",".join(mimic.LABEL_COLUMNS)
    assert set(first.strip().split(",")[2:]) <= {"1.0", "0.0", "-1.0", ""}
    assert site2.evaluation["image"].str.contains(r"/files/p10/p1\d{7}/s\d{8}/[0-9a-f-]+\.jpg$").all()
    assert site2.labels_from == "phantom truth" and set(np.unique(site2.labels)) <= {0.0, 1.0}
    assert set(site2.evaluation["split"]) == {"test"} and set(site2.train["split"]) == {"train"}
    assert not set(site2.train["patient"]) & set(sites["site 1"].train["patient"])
    # its view mix: mostly AP among frontal films (site 1 follows CheXpert's measured share)
    frontal = site2.train[site2.train["frontal"]]
    assert (frontal["view"] == "AP").mean() > 0.6
    # demographics from the MIMIC-IV-shaped patients file
    assert (root / PATIENTS_CSV).is_file() and site2.evaluation["Sex"].isin(["Male", "Female"]).all()
    truth = read_truth(root)
    assert truth.meta["params"]["shift"] == 0.0 and truth.meta["subgroup_effect"] is None
    assert set(site2.labels.index) <= set(truth.findings.index)


def test_shift_zero_is_site_one_look_and_a_shift_changes_exposure_noise_and_markers():
    rng = np.random.default_rng(5)
    pixels = render_image({"Cardiomegaly": 0.8}, {}, frontal=True, size=(64, 64), rng=rng)
    assert apply_look(pixels, 0.0, np.random.default_rng(1)) is pixels
    looks = [apply_look(pixels, 1.5, np.random.default_rng(k)) for k in range(20)]
    assert np.mean([np.std(look.astype(float) - pixels) for look in looks]) > 10
    # the exposure curve lifts the darkest pixels; a marker is burnt in on most films at shift >= 1
    assert np.mean([np.percentile(look, 5) for look in looks]) > np.percentile(pixels, 5) + 20
    assert sum((look[1:4, :] >= 200).sum() > 10 for look in looks) >= 15


def test_same_look_same_auroc_within_sampling_error(same_look):
    """Shift 0: the site-1 model's AUROC at site 2 equals its AUROC at home within 3 SEs, per observation."""
    table = same_look[3]
    transport = external.transport_drop(table, SOURCES)
    mine = transport[(transport["trained on"] == "site 1")].set_index("observation")
    assert len(mine) == len(OBSERVATIONS) and (mine["se"] > 0).all() and mine["ci_low"].notna().all()
    assert (mine["drop"].abs() < 3 * mine["se"]).all(), mine[["drop", "se", "ci_low", "ci_high"]]
    cells = same_look[3].set_index(["trained on", "evaluated on", "observation"])
    for obs in OBSERVATIONS:  # the SE is the two cells' DeLong SEs combined (independent sites)
        want = np.hypot(cells.loc[("site 1", "site 1", obs), "se"], cells.loc[("site 1", "site 2", obs), "se"])
        assert mine.loc[obs, "se"] == pytest.approx(want)


def test_a_large_shift_drops_auroc_and_pooled_training_recovers_most_of_it(same_look, shifted):
    same, moved = external.grid(same_look[3]), external.grid(shifted[3])
    measured = same.loc["site 1", "site 2"] - moved.loc["site 1", "site 2"]
    assert measured > 0.1  # the measured drop of the mean AUROC (0.922 -> 0.668 = 0.25 at shift 1, this seed)
    gaps = external.drops(shifted[2], shifted[0], SOURCES, OBSERVATIONS).set_index(
        ["evaluated on", "trained on", "observation"]
    )
    paired = gaps.loc[("site 2", "site 1", "mean")]
    assert paired["ci_high"] < 0 and paired["shown"] == "with CI"  # paired on site 2's studies, clustered
    lost = moved.loc["site 2", "site 2"] - moved.loc["site 1", "site 2"]
    regained = moved.loc["pooled", "site 2"] - moved.loc["site 1", "site 2"]
    assert regained >= 0.7 * lost
    assert moved.loc["pooled", "site 1"] >= moved.loc["site 1", "site 1"] - 0.03  # pooling costs site 1 little


def test_the_paired_mean_gap_is_the_mean_of_independent_per_observation_aurocs(shifted):
    sites, _, scores, _ = shifted
    site = sites["site 2"]
    gaps = pd.DataFrame(
        external.paired_gap(site, scores[("site 2", "site 2")], scores[("site 1", "site 2")], OBSERVATIONS)
    )
    for obs in OBSERVATIONS:
        y = site.labels[obs]
        want = roc_auc_score(y, scores[("site 1", "site 2")].loc[y.index, obs]) - roc_auc_score(
            y, scores[("site 2", "site 2")].loc[y.index, obs]
        )
        assert gaps.set_index("observation").loc[obs, "delta"] == pytest.approx(want, abs=1e-9)
    assert gaps.set_index("observation").loc["mean", "delta"] == pytest.approx(gaps["delta"][:-1].mean())


def test_the_policy_comparison_runs_at_both_sites_and_states_agreement(same_look):
    sites, features, _, _ = same_look
    arms = site_policy.fit_policy_arms(sites, ["site 1"], features, observations=OBSERVATIONS[:3], seeds=(0, 1))
    choices = site_policy.policy_by_site(sites, arms, sites["site 1"].train, OBSERVATIONS[:3], n_resamples=50)
    table, sentence = site_policy.site_agreement(choices)
    assert set(choices) == {"site 1", "site 2"} and list(table.index) == list(OBSERVATIONS[:3])
    assert {"site 1 verdict", "site 2 verdict", "same choice", "same sign of Δ"} <= set(table.columns)
    k = int(table["compared at every site"].sum())
    assert f"Of {k} observation(s) compared at every site" in sentence
    assert f"agrees on {int(table.loc[table['compared at every site'], 'same choice'].sum())}" in sentence


def test_a_run_is_evaluated_on_another_data_sets_evaluation_split(same_look, tmp_path):
    site = same_look[0]["site 2"]
    name = external_set("mimic-cxr-jpg")
    assert name == "external_mimic_cxr_jpg" and check_eval_set(name) == name
    rng = np.random.default_rng(0)
    scores = site.evaluation[list(OBS_ALL)].fillna(0).abs().to_numpy() + rng.normal(0, 1, (len(site.evaluation), 14))
    write_predictions(site.evaluation, scores, RunDir(tmp_path).predictions(name))
    (tmp_path / "config.json").write_text("{}")
    _, table, summary = external.evaluate_run_on(tmp_path, "mimic-cxr-jpg", site.root, n_resamples=50, predict=False)
    assert summary["split"] == "test" and summary["studies"] == len(site.labels) and summary["resampled"] == "patients"
    assert (tmp_path / "metrics_external_mimic_cxr_jpg.json").is_file()
    assert table.loc["Edema", "auroc"] > 0.6  # the scores follow the report labels


def test_a_patient_in_two_sites_is_refused():
    frames = {"a": pd.DataFrame({"patient": ["p1", "p2"]}), "b": pd.DataFrame({"patient": ["p3", "p2"]})}
    with pytest.raises(DataError, match="patient 'p2' is in a and in b"):
        external.check_patients(frames)


def test_the_subgroup_effect_is_recorded_and_fades_the_old_patients_signs(tmp_path):
    effect = {"age_above": 60, "fade": 0.3}
    root = generate_second_site(
        tmp_path, patients=20, validate_patients=2, test_patients=10, size=(32, 32), subgroup_effect=effect
    )
    truth = pd.read_csv(root / "phantom_truth.csv")
    assert json.loads((root / "phantom_truth.json").read_text())["subgroup_effect"] == {"age_above": 60.0, "fade": 0.3}
    assert 0 < truth["faded"].mean() < 1
    assert (truth["faded"] == (truth["age"] > 60)).all()
    off = pd.read_csv(
        generate_second_site(tmp_path / "off", patients=20, validate_patients=2, test_patients=10, size=(32, 32))
        / "phantom_truth.csv"
    )
    assert (off["faded"] == 0).all()
    with pytest.raises(DataError, match="other parameters"):
        generate_second_site(tmp_path, patients=20, validate_patients=2, test_patients=10, size=(32, 32))
    with pytest.raises(ValueError, match="shift must be"):
        generate_second_site(tmp_path / "x", shift=-1)


def test_patients_file_errors_name_file_line_and_expectation(tmp_path):
    path = tmp_path / "patients.csv"
    path.write_text("subject_id,gender,anchor_age\n10000001,M,70\n10000002,X,50\n")
    with pytest.raises(DataError, match=r"patients.csv line 3: column 'gender' has value 'X'; expected gender M or F"):
        add_demographics(pd.DataFrame({"subject_id": [10000001]}), path)


def test_every_dataset_names_its_training_and_evaluation_splits():
    assert get_dataset("chexpert").evaluation_split == "valid"
    assert get_dataset("mimic-cxr-jpg").evaluation_split == "test"
    assert SITE_FOLDER == mimic.DEFAULT_ROOT.split("/")[-1]


@pytest.mark.parametrize("planted", [False, True], ids=["effect off", "effect on"])
def test_the_subgroup_analysis_finds_the_planted_age_effect_in_pixels_and_nothing_without_it(tmp_path, planted):
    """End to end through the pixels (the statistics-level check is tests/test_subgroups.py): site 2 with signs
    drawn at 0.3 x severity above 65 (or not), its own pixel learner, the older-vs-younger AUROC gap per
    observation. On: a Holm-significant drop for at least two of four observations, every gap negative. Off: no
    gap significant after Holm over the four (seed 0: smallest Holm p 0.084, Pleural Effusion; on: Cardiomegaly
    and Pleural Effusion at Holm p <= 0.003)."""
    effect = {"age_above": 65, "fade": 0.3} if planted else None
    root = generate_second_site(
        tmp_path, patients=200, validate_patients=3, test_patients=150, size=SIZE, subgroup_effect=effect
    )
    sites = {"site 2": external.load_site("site 2", "mimic-cxr-jpg", root)}
    observations = ("Cardiomegaly", "Edema", "Pleural Effusion", "Support Devices")
    features = external.site_features(sites, FEATURES)
    scores = external.fit_sources(sites, {"local": ["site 2"]}, features, observations=observations)[
        ("local", "site 2")
    ]
    site = sites["site 2"]
    first = site.evaluation.drop_duplicates("study").set_index("study")
    older = pd.Series(np.where(first["Age"] > 65, "older", "younger"), index=first.index)
    gaps = subgroups.subgroup_gaps(site.labels, scores, site.patients, older, observations, reference="younger")
    assert (gaps["shown"] == "with CI").all()
    family = holm(gaps["p_value"].to_numpy())
    if planted:
        assert (family < 0.05).sum() >= 2 and (gaps["gap"] < 0).all()
    else:
        assert (family >= 0.05).all()
