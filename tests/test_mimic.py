"""MIMIC-CXR-JPG reader on tiny files in the released format (gzip, real headers, real path layout),
and the dataset registry, parametrised over every registered data set."""

import gzip
import os

import numpy as np
import pandas as pd
import pytest
from conftest import chexpert_rows, write_chexpert
from PIL import Image

from chexutils.core.errors import DataError
from chexutils.core.labels import OBSERVATIONS
from chexutils.data import mimic
from chexutils.data.datasets import DATASETS, get_dataset, read_dataset

# (subject_id, study_id, split, [(dicom_id, ViewPosition), ...]); ids shaped like the release's
STUDIES = [
    (
        10000032,
        50414267,
        "train",
        [
            ("02aa804e-bde0afdd-112c0b34-7bc16630-4e384014", "PA"),
            ("174413ec-4ec4c1f7-34ea26b7-c5f994f8-79ef1962", "LATERAL"),
        ],
    ),
    (10000032, 53189527, "train", [("2a2277a9-b0ded155-c0de8eb9-c124d10e-82c5caab", "AP")]),
    (
        11000011,
        51111111,
        "validate",
        [
            ("aaaaaaa1-00000000-00000000-00000000-00000001", "AP"),
            ("aaaaaaa1-00000000-00000000-00000000-00000002", "LL"),
        ],
    ),
    (
        12000022,
        52222222,
        "test",
        [("bbbbbbb2-00000000-00000000-00000000-00000001", "PA"), ("bbbbbbb2-00000000-00000000-00000000-00000002", "")],
    ),
]
UNLABELLED = (
    12000022,
    53333333,
    "test",
    [("ccccccc3-00000000-00000000-00000000-00000001", "AP")],
)  # no label row, as 8 released studies


def study_labels(i: int) -> dict[str, str]:
    """A distinct label pattern per study, so a join by position instead of key shows."""
    return {obs: ["1.0", "0.0", "-1.0", ""][(i + 2 * j) % 4] for j, obs in enumerate(OBSERVATIONS)}


def _write_gz(path, header, rows, order) -> None:
    with gzip.open(path, "wt", newline="", encoding="utf-8") as handle:
        pd.DataFrame([rows[i] for i in order], columns=list(header)).to_csv(handle, index=False)


def write_mimic(root, studies=STUDIES, seed: int = 0, images: bool = True, edit=None):
    """The three released CSVs (each in its own shuffled row order) and the JPGs under files/."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    split_rows, meta_rows, label_rows = [], [], []
    for i, (subject, study, split, views) in enumerate(studies):
        if (subject, study) != UNLABELLED[:2]:
            labels = study_labels(i)
            label_rows.append([str(subject), str(study), *(labels[c] for c in mimic.LABEL_COLUMNS[2:])])
        for dicom, view in views:
            split_rows.append([dicom, str(study), str(subject), split])
            meta_rows.append(
                [dicom, str(subject), str(study), "CHEST (PA AND LAT)", view, "3056", "2544", "21800506", "213014.531",
                 "CHEST (PA AND LAT)", {"PA": "postero-anterior", "AP": "antero-posterior"}.get(view, "lateral"), "Erect"]
            )  # fmt: skip
            if images:
                target = root / mimic.image_path(subject, study, dicom)
                target.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8), mode="L").save(target)
    if edit:
        edit(split_rows, meta_rows, label_rows)
    for name, header, rows in (
        (mimic.SPLIT_CSV, mimic.SPLIT_COLUMNS, split_rows),
        (mimic.METADATA_CSV, mimic.METADATA_COLUMNS, meta_rows),
        (mimic.LABELS_CSV, mimic.LABEL_COLUMNS, label_rows),
    ):
        _write_gz(root / name, header, rows, rng.permutation(len(rows)))
    return root


def _line_of(path, column: str, value: str) -> int:
    with gzip.open(path, "rt") as handle:
        frame = pd.read_csv(handle, dtype=str, keep_default_na=False)
    return int(np.flatnonzero(frame[column] == value)[0]) + 2


def test_released_files_are_gzip_with_the_real_headers_and_layout(tmp_path):
    root = write_mimic(tmp_path / "mimic")
    with gzip.open(root / mimic.LABELS_CSV, "rt") as handle:
        assert handle.readline().startswith("subject_id,study_id,Atelectasis,Cardiomegaly,Consolidation,Edema,")
    with gzip.open(root / mimic.SPLIT_CSV, "rt") as handle:
        assert handle.readline().strip() == "dicom_id,study_id,subject_id,split"
    assert (root / "files/p10/p10000032/s50414267/02aa804e-bde0afdd-112c0b34-7bc16630-4e384014.jpg").is_file()


@pytest.mark.parametrize("seed", [0, 1])
def test_labels_join_by_key_whatever_the_row_orders(tmp_path, seed):
    root = write_mimic(tmp_path / "mimic", STUDIES + [UNLABELLED], seed=seed)
    frame = mimic.read_mimic(root)
    assert len(frame) == 7 and frame.attrs == {"dropped_unlabelled_images": 1, "dropped_unlabelled_studies": 1}
    for i, (subject, study, split, views) in enumerate(STUDIES):
        rows = frame[frame["study"] == f"p{subject}/s{study}"]
        assert sorted(rows["dicom_id"]) == sorted(d for d, _ in views)
        assert (rows["patient"] == f"p{subject}").all() and (rows["split"] == split).all()
        expected = np.array([float(v) if v else np.nan for v in study_labels(i).values()])
        assert np.array_equal(rows[list(OBSERVATIONS)].to_numpy(), np.tile(expected, (len(rows), 1)), equal_nan=True)
    first = frame.set_index("dicom_id").loc["02aa804e-bde0afdd-112c0b34-7bc16630-4e384014"]
    assert first["Path"] == "files/p10/p10000032/s50414267/02aa804e-bde0afdd-112c0b34-7bc16630-4e384014.jpg"
    assert first["image"] == os.path.join(str(root.resolve()), first["Path"])
    assert first["line"] == _line_of(root / mimic.SPLIT_CSV, "dicom_id", first.name)
    assert frame[list(OBSERVATIONS)].dtypes.eq(float).all()
    assert tuple(frame.columns[: len(mimic.FRAME_COLUMNS)]) == mimic.FRAME_COLUMNS
    assert "StudyDate" in frame.columns and "ViewPosition" not in frame.columns  # the latter is `view`


def test_the_loader_and_policies_apply_unchanged(tmp_path):
    from chexutils.data.loader import image_source
    from chexutils.training.policies import get_policy

    frame = mimic.read_mimic(write_mimic(tmp_path / "mimic"), views="frontal")
    images = image_source(frame, 16, "bilinear", use_cache=False, cache_dir=None)
    pixels, row = images[0]
    assert tuple(pixels.shape) == (1, 16, 16) and str(pixels.dtype) == "torch.uint8" and row == 0
    for name in ("U-Ignore", "U-Zeros", "U-Ones", "U-MultiClass"):
        targets = get_policy(name).targets(frame)
        assert targets.values.shape == (len(frame), len(OBSERVATIONS))


def test_view_filtering(tmp_path):
    root = write_mimic(tmp_path / "mimic")
    frontal = mimic.read_mimic(root, views="frontal")
    assert sorted(frontal["view"]) == ["AP", "AP", "PA", "PA"] and frontal["frontal"].all()
    assert sorted(mimic.read_mimic(root, views="lateral")["view"]) == ["LATERAL", "LL"]
    assert sorted(mimic.read_mimic(root, views=["pa", "LL"])["view"]) == ["LL", "PA", "PA"]
    assert len(mimic.read_mimic(root)) == 7  # None: every image, the blank ViewPosition included
    with pytest.raises(DataError, match=r"view SWIMMERS; views present: .*LATERAL"):
        mimic.read_mimic(root, views="SWIMMERS")


def test_the_official_split_per_image(tmp_path):
    root = write_mimic(tmp_path / "mimic")
    valid = mimic.read_mimic(root, split="validate")
    assert set(valid["dicom_id"]) == {d for d, _ in STUDIES[2][3]} and (valid["folder"] == "valid").all()
    both = mimic.read_mimic(root, split=["train", "test"], views="frontal")
    assert sorted(both["split"]) == ["test", "train", "train"]
    with pytest.raises(ValueError, match="known: train, validate, test"):
        mimic.read_mimic(root, split="valid")


def test_a_bad_label_value_names_file_line_and_expectation(tmp_path):
    def edit(split_rows, meta_rows, label_rows):
        label_rows[1][2 + mimic.LABEL_COLUMNS[2:].index("Edema")] = "2.0"

    root = write_mimic(tmp_path / "mimic", edit=edit)
    line = _line_of(root / mimic.LABELS_CSV, "study_id", str(STUDIES[1][1]))
    with pytest.raises(
        DataError,
        match=rf"chexpert\.csv\.gz line {line}: column 'Edema' has value '2.0'; expected 1.0, 0.0, -1.0 or blank",
    ):
        mimic.read_mimic(root)


def test_a_missing_column_names_file_and_header_line(tmp_path):
    root = write_mimic(tmp_path / "mimic")
    path = root / mimic.METADATA_CSV
    with gzip.open(path, "rt") as handle:
        frame = pd.read_csv(handle, dtype=str, keep_default_na=False)
    with gzip.open(path, "wt") as handle:
        frame.drop(columns="ViewPosition").to_csv(handle, index=False)
    with pytest.raises(DataError, match=r"metadata\.csv\.gz line 1: missing column\(s\) 'ViewPosition'"):
        mimic.read_mimic(root)


def test_labels_of_a_study_without_images_is_an_error(tmp_path):
    def edit(split_rows, meta_rows, label_rows):
        label_rows.append(["19999999", "59999999", *[""] * len(OBSERVATIONS)])

    root = write_mimic(tmp_path / "mimic", edit=edit)
    line = _line_of(root / mimic.LABELS_CSV, "study_id", "59999999")
    with pytest.raises(
        DataError, match=rf"chexpert\.csv\.gz line {line}: study 59999999 of subject 19999999 has labels but no image"
    ):
        mimic.read_mimic(root)


def test_split_and_metadata_must_agree_per_image(tmp_path):
    def edit(split_rows, meta_rows, label_rows):
        meta_rows[0][2] = str(STUDIES[1][1])  # the first image filed under another study in the metadata

    root = write_mimic(tmp_path / "mimic", edit=edit)
    with pytest.raises(
        DataError, match=r"metadata\.csv\.gz line \d+: dicom_id '02aa804e.*expected the same subject_id and study_id"
    ):
        mimic.read_mimic(root)


def test_images_on_disk_are_checked(tmp_path):
    root = write_mimic(tmp_path / "mimic")
    gone = "2a2277a9-b0ded155-c0de8eb9-c124d10e-82c5caab"
    (root / mimic.image_path(10000032, 53189527, gone)).unlink()
    line = _line_of(root / mimic.SPLIT_CSV, "dicom_id", gone)
    with pytest.raises(DataError, match=rf"split\.csv\.gz line {line}: image .*{gone}\.jpg does not exist"):
        mimic.read_mimic(root)
    assert len(mimic.read_mimic(root, check_files=False)) == 7
    assert len(mimic.read_mimic(root, split="validate")) == 2  # only the selected images are looked for


def test_a_missing_or_cut_off_file_is_a_data_error(tmp_path):
    root = write_mimic(tmp_path / "mimic")
    data = (root / mimic.SPLIT_CSV).read_bytes()
    (root / mimic.SPLIT_CSV).write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"split\.csv\.gz: cannot be decompressed"):
        mimic.read_mimic(root)
    (root / mimic.SPLIT_CSV).unlink()
    with pytest.raises(DataError, match=r"split\.csv\.gz: file does not exist"):
        mimic.read_mimic(root)


def test_a_gunzipped_copy_is_read_too(tmp_path):
    root = write_mimic(tmp_path / "mimic")
    with gzip.open(root / mimic.LABELS_CSV, "rb") as handle:
        (root / mimic.LABELS_CSV.removesuffix(".gz")).write_bytes(handle.read())
    (root / mimic.LABELS_CSV).unlink()
    assert len(mimic.read_mimic(root)) == 7


# The registry: every data set gets a tiny release in its own released format from one writer here.
def _write_chexpert_release(root):
    rows = chexpert_rows(4)
    write_chexpert(root, rows)
    write_chexpert(root, rows.assign(Path=rows["Path"].str.replace("/train/", "/valid/")), name="valid.csv")
    return root


RELEASE_WRITERS = {"chexpert": _write_chexpert_release, "mimic-cxr-jpg": write_mimic}


def test_every_registered_dataset_has_a_release_writer():
    assert sorted(RELEASE_WRITERS) == sorted(DATASETS)


def test_an_unknown_dataset_names_the_known_ones():
    with pytest.raises(KeyError, match="unknown dataset 'nih'; known: chexpert, mimic-cxr-jpg"):
        get_dataset("nih")


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_every_dataset_reads_into_the_common_frame(tmp_path, name):
    spec = get_dataset(name)
    assert spec.name == name and spec.description and spec.splits and spec.default_root.startswith("data")
    root = RELEASE_WRITERS[name](tmp_path / "release")
    frame = read_dataset(name, root, split=spec.splits[0])
    common = ["image", "patient", "study", "view", "frontal", "folder", "split", "line", *OBSERVATIONS]
    assert not frame.empty and set(common) <= set(frame.columns)
    assert (frame["split"] == spec.splits[0]).all()
    assert all(os.path.isfile(p) for p in frame["image"])
    labels = frame[list(OBSERVATIONS)].to_numpy(dtype=float)
    assert np.isin(labels[~np.isnan(labels)], (1.0, 0.0, -1.0)).all()
    assert frame.groupby("study")["patient"].nunique().eq(1).all()
    frontal = read_dataset(name, root, views="frontal")
    assert not frontal.empty and frontal["frontal"].all()
    assert set(read_dataset(name, root)["split"]) <= set(spec.splits)
    with pytest.raises(ValueError, match=f"no split 'nope'; known: {', '.join(spec.splits)}"):
        read_dataset(name, root, split="nope")
