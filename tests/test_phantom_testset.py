"""The phantom's official test set: released layout and formats, majority reference, planted readers."""

import json

import numpy as np
import pandas as pd
import pytest

from chexutils.core.labels import HIERARCHY, OBSERVATIONS
from chexutils.data import test_set_files as testset
from chexutils.phantom import simulated_test as phantom_testset
from chexutils.phantom.generate import generate_phantom
from chexutils.phantom.sidecar import TEST_TRUTH_CSV, TEST_TRUTH_JSON

PHANTOM = dict(patients=12, valid_patients=4, size=(40, 32), seed=11, workers=1)
TEST_PATIENTS = 400


@pytest.fixture(scope="module")
def phantom_with_test(tmp_path_factory):
    out = tmp_path_factory.mktemp("phantom_test")
    generate_phantom(out, test_patients=TEST_PATIENTS, **PHANTOM)
    return out


def test_released_layout_and_formats(phantom_with_test):
    official = testset.read_official_test(phantom_with_test)
    assert len(official.labels) == TEST_PATIENTS and official.frame["patient"].nunique() == TEST_PATIENTS
    assert set(official.readers) == {"bc1", "bc2", "bc3", "bc5", "bc7", "bc4", "bc6", "bc8"}
    labels_dir = phantom_with_test / testset.LABELS_REPO
    header = (labels_dir / "radiologists" / "benchmark_radiologists" / "bc4.csv").read_text().splitlines()[0].split(",")
    assert header.index("Lung Lesion") < header.index("Lung Opacity")  # as released
    first = pd.read_csv(labels_dir / "groundtruth.csv")["Study"].iloc[0]
    assert first.startswith("CheXpert-v1.0/test/patient00017/study1")  # test patients follow train and valid
    assert (
        pd.read_csv(phantom_with_test / "CheXpert" / "test_labels.csv")["Path"]
        .str.match(r"test/patient\d{5}/study1/view\d_")
        .all()
    )
    reference = testset.majority_vote({r: official.readers[r] for r in testset.REFERENCE_READERS})
    assert (reference.loc[official.labels.index] == official.labels).all().all()


def test_reader_operating_point_matches_its_planted_one(phantom_with_test):
    labels_dir = phantom_with_test / testset.LABELS_REPO
    planted = json.loads((labels_dir / TEST_TRUTH_JSON).read_text())["p_read_positive"]
    truth = pd.read_csv(labels_dir / TEST_TRUTH_CSV).set_index("study")
    reads = testset.read_study_labels(testset.reader_file(labels_dir, "bc6")).loc[truth.index]
    z_scores = []
    for obs in OBSERVATIONS[1:]:
        category = truth[f"{obs}|category"]
        p = category.map(planted["bc6"][obs]).to_numpy()  # P(read positive) for each study, as planted
        positive = truth[f"{obs}|truth"].to_numpy() == 1
        for mask in (positive, ~positive):  # sensitivity and 1 - specificity against the true findings
            if mask.sum() < 20:
                continue
            expected, variance = p[mask].sum(), (p[mask] * (1 - p[mask])).sum()
            z_scores.append((reads[obs].to_numpy()[mask].sum() - expected) / np.sqrt(variance))
    z_scores = np.array(z_scores)
    assert len(z_scores) >= 12
    assert np.abs(z_scores).max() < 4.5 and abs(z_scores.mean()) < 1.0  # measured = planted, within sampling noise
    # faint findings are missed more often than clear ones, mimics raise false alarms; a mimic drawn as
    # the faint sign (the default) is the same film, so every reader reads it like a faint finding
    for reader in planted.values():
        for obs in ("Edema", "Pleural Effusion", "Support Devices"):
            assert reader[obs]["faint"] < reader[obs]["clear"]
            assert reader[obs]["mimic"] == reader[obs]["faint"] > reader[obs]["none"]


def test_readers_tell_a_look_alike_mimic_from_a_faint_sign():
    readers = ("bc1", "bc4")
    alike = phantom_testset.reader_parameters(readers, np.random.default_rng(0), "faint-sign")
    apart = phantom_testset.reader_parameters(readers, np.random.default_rng(0), "look-alike")
    for r in readers:
        for obs in OBSERVATIONS[1:]:
            assert apart[r][obs]["faint"] == alike[r][obs]["faint"]  # same draws, only the mimic differs
            lo, hi = phantom_testset.READ_RANGES["mimic"]
            assert lo <= apart[r][obs]["mimic"] <= hi and alike[r][obs]["mimic"] == alike[r][obs]["faint"]


def test_test_set_leaves_train_and_valid_unchanged_and_can_be_added(tmp_path):
    without = generate_phantom(tmp_path / "a", **PHANTOM)
    added = generate_phantom(tmp_path / "a", test_patients=30, **PHANTOM)  # added to the existing phantom
    assert added == without and testset.has_official_test(tmp_path / "a")
    assert len(testset.read_official_test(tmp_path / "a", check_files=True).labels) == 30
    fresh = generate_phantom(tmp_path / "b", test_patients=30, **PHANTOM)
    for name in ("train.csv", "valid.csv"):
        assert (without / name).read_bytes() == (fresh / name).read_bytes()
    for name in ("groundtruth.csv", "radiologists/benchmark_radiologists/bc8.csv"):
        assert (tmp_path / "a" / testset.LABELS_REPO / name).read_bytes() == (
            tmp_path / "b" / testset.LABELS_REPO / name
        ).read_bytes()
    assert generate_phantom(tmp_path / "b", **PHANTOM) == fresh  # asking for no test set reuses the phantom


def test_readers_read_a_parent_by_the_strength_of_the_sign_it_rests_on(phantom_with_test):
    """A test-set parent resting only on faint child signs is recorded faint, so every simulated reader
    reads it with its faint-sign probability, not its clear one."""
    labels_dir = phantom_with_test / testset.LABELS_REPO
    truth = pd.read_csv(labels_dir / TEST_TRUTH_CSV).set_index("study")
    planted = json.loads((labels_dir / TEST_TRUTH_JSON).read_text())["p_read_positive"]
    for parent, children in HIERARCHY.items():
        category, severity = truth[f"{parent}|category"], truth[f"{parent}|severity"]
        kinds = pd.concat([truth[f"{c}|category"] for c in children], axis=1)
        faint_only = kinds.eq("faint").any(axis=1) & ~kinds.eq("clear").any(axis=1) & (severity <= 0.3)
        assert (severity[category == "clear"] >= 0.45).all(), parent
        assert (category[faint_only] == "faint").all() and faint_only.sum() >= 5, parent
        for reader in planted.values():
            assert reader[parent]["faint"] < reader[parent]["clear"]
