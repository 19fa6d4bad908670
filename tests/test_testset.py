"""Readers of the released official test-set files: by column name, joined by (patient, study), clear errors."""

import numpy as np
import pandas as pd
import pytest

from chexutils.core.errors import DataError
from chexutils.core.labels import OBSERVATIONS
from chexutils.data import test_set_files as testset

STUDIES = [
    "CheXpert-v1.0/test/patient64741/study1",
    "CheXpert-v1.0/test/patient64742/study1",
    "CheXpert-v1.0/test/patient64743/study1",
]


def _labels(seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(rng.integers(0, 2, (len(STUDIES), len(OBSERVATIONS))), columns=list(OBSERVATIONS))


def _write(path, frame: pd.DataFrame):
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path


def test_groundtruth_is_read_per_study_by_name(tmp_path):
    labels = _labels(0)
    path = _write(tmp_path / "groundtruth.csv", pd.concat([pd.Series(STUDIES, name="Study"), labels], axis=1))
    read = testset.read_study_labels(path)
    assert list(read.index) == ["patient64741/study1", "patient64742/study1", "patient64743/study1"]
    assert list(read.columns) == list(OBSERVATIONS)
    assert (read.to_numpy() == labels.to_numpy()).all()


def test_reader_file_with_shuffled_columns_is_read_by_name(tmp_path):
    labels = _labels(1)
    released = [
        "Study",
        "No Finding",
        "Enlarged Cardiomediastinum",
        "Cardiomegaly",
        "Lung Lesion",
        "Lung Opacity",
        "Edema",
        "Consolidation",
        "Pneumonia",
        "Atelectasis",
        "Pneumothorax",
        "Pleural Effusion",
        "Pleural Other",
        "Fracture",
        "Support Devices",
    ]  # bc4.csv's order: Lung Lesion before Lung Opacity
    full = pd.concat([pd.Series(STUDIES, name="Study"), labels], axis=1)
    _write(tmp_path / "radiologists" / "benchmark_radiologists" / "bc4.csv", full[released])
    shuffled = list(np.random.default_rng(7).permutation(full.columns))
    _write(tmp_path / "radiologists" / "groundtruth" / "bc1_gt.csv", full[shuffled])
    reads = testset.read_readers(tmp_path, readers=("bc4", "bc1"))
    for name in ("bc4", "bc1"):
        assert list(reads[name].columns) == list(OBSERVATIONS)
        for obs in OBSERVATIONS:
            assert (reads[name][obs].to_numpy() == labels[obs].to_numpy()).all(), (name, obs)
    # position-based reading would have swapped these two, which differ in this fixture
    assert (labels["Lung Lesion"] != labels["Lung Opacity"]).any()


def test_majority_vote_of_five(tmp_path):
    reads = {
        f"r{i}": pd.DataFrame({"Edema": v}, index=["a", "b", "c"])
        for i, v in enumerate([[1, 1, 0], [1, 0, 0], [1, 1, 0], [0, 0, 1], [0, 1, 1]])
    }
    assert testset.majority_vote(reads)["Edema"].tolist() == [1.0, 1.0, 0.0]


def test_study_label_errors_name_file_line_and_expectation(tmp_path):
    labels = _labels(2)
    bad = pd.concat([pd.Series(STUDIES, name="Study"), labels], axis=1)
    bad.loc[1, "Edema"] = 2
    with pytest.raises(DataError, match=r"groundtruth.csv line 3: column 'Edema' has value '2'; expected 0 or 1"):
        testset.read_study_labels(_write(tmp_path / "groundtruth.csv", bad))
    with pytest.raises(DataError, match=r"line 1: missing column\(s\) 'Fracture'"):
        testset.read_study_labels(_write(tmp_path / "g2.csv", bad.drop(columns="Fracture")))
    odd = pd.concat([pd.Series(STUDIES, name="Study"), labels], axis=1)
    odd.loc[2, "Study"] = "CheXpert-v2/test/patient64743/study1"
    with pytest.raises(DataError, match=r"g3.csv line 4: Study .* matches neither"):
        testset.read_study_labels(_write(tmp_path / "g3.csv", odd))


def _images(paths, **extra) -> pd.DataFrame:
    return pd.DataFrame({"Path": paths, "Edema": [1] * len(paths), **extra})


def test_chexlocalize_image_labels_without_sex_or_age(tmp_path):
    paths = [
        "test/patient64741/study1/view1_frontal.jpg",
        "test/patient64741/study1/view2_lateral.jpg",
        "test/patient64742/study1/view1_frontal.jpg",
    ]
    frame = testset.read_image_labels(_write(tmp_path / "CheXpert" / "test_labels.csv", _images(paths)))
    assert frame["study"].tolist() == ["patient64741/study1"] * 2 + ["patient64742/study1"]
    assert frame["frontal"].tolist() == [True, False, True]  # from the file name when Frontal/Lateral is absent
    assert frame["image"].iloc[0] == str((tmp_path / "CheXpert" / paths[0]).resolve())
    assert frame["line"].tolist() == [2, 3, 4]
    assert "Sex" not in frame and frame["Edema"].tolist() == [1.0, 1.0, 1.0]


def test_join_by_study_and_its_errors(tmp_path):
    labels = testset.read_study_labels(
        _write(
            tmp_path / "groundtruth.csv", pd.concat([pd.Series(STUDIES[:2], name="Study"), _labels(3).iloc[:2]], axis=1)
        )
    )
    paths = [
        "test/patient64742/study1/view1_frontal.jpg",
        "test/patient64741/study1/view1_frontal.jpg",
        "test/patient64741/study1/view2_lateral.jpg",
    ]
    images = testset.read_image_labels(_write(tmp_path / "test_labels.csv", _images(paths, Edema=[0, 0, 0])))
    joined = testset.join_study_labels(images, labels)
    for obs in ("Edema", "Lung Opacity"):  # the study's labels from groundtruth.csv, by key, for every image
        assert joined[obs].tolist() == [labels.loc[s, obs] for s in images["study"]]

    with pytest.raises(DataError, match=r"1 labelled study has no image .*'patient64742/study1'"):
        testset.join_study_labels(images.iloc[1:], labels, "imgs.csv", "groundtruth.csv")
    extra = testset.read_image_labels(
        _write(tmp_path / "t2.csv", _images(paths + ["test/patient64743/study1/view1_frontal.jpg"]))
    )
    with pytest.raises(
        DataError,
        match=r"t2.csv line 5: image 'test/patient64743/study1/view1_frontal.jpg' belongs to a study with no label",
    ):
        testset.join_study_labels(extra, labels, str(tmp_path / "t2.csv"))
    with pytest.raises(
        DataError, match=r"line 3: Path 'images/patient64741.*matches neither the CheXpert release nor CheXlocalize"
    ):
        testset.read_image_labels(
            _write(tmp_path / "t3.csv", _images([paths[0], "images/patient64741/study1/view1_frontal.jpg"]))
        )


def test_missing_test_set_says_where_the_files_go(tmp_path):
    with pytest.raises(
        DataError, match=r"cheXpert-test-set-labels/groundtruth.csv: file does not exist; .*CheXlocalize"
    ):
        testset.find_official_test(tmp_path)
    assert not testset.has_official_test(tmp_path)
