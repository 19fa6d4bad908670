"""Read the released official CheXpert test set (and the CheXlocalize per-image label files), by
column name, and join study-level labels to image rows by (patient, study).

Formats, as verified against the public files (read, not copied):

- ``rajpurkarlab/cheXpert-test-set-labels`` (GitHub, commit a930205): ``groundtruth.csv`` has a
  ``Study`` column (``CheXpert-v1.0/test/patient64741/study1``; one row per study, patients
  64741-65240) and the 14 observations as 0/1 in the CheXpert order. The radiologists' files
  ``radiologists/benchmark_radiologists/bc{4,6,8}.csv`` and ``radiologists/groundtruth/bc{1,2,3,5,7}_gt.csv``
  have the same columns but put ``Lung Lesion`` before ``Lung Opacity``. Leaderboard models'
  ``example_models/predictions/standard/*_predictions.csv`` are keyed by ``Study`` with a subset of
  observations (e.g. ``Cardiomegaly,Edema,Consolidation,Atelectasis,Pleural Effusion``).
  ``labeler/chexpert_labels.csv`` (at a03eb34): ``Study`` and the 14 observations in the CheXpert order
  as the report labeler wrote them, ``1.0`` / ``0.0`` / ``-1.0`` / blank, one row per test study.
- ``rajpurkarlab/cheXlocalize`` (README at commit bfe28aa: 668 test images of 500 patients, 234 valid
  images of 200; download_instructions.md at 01456c7: the release has a ``CheXpert`` and a
  ``CheXlocalize`` folder). Public code that reads the release uses ``CheXpert/test_labels.csv`` and
  ``CheXpert/val_labels.csv``, one row per image with ``Path`` relative to ``CheXpert/``
  (``test/patient64741/study1/view1_frontal.jpg``). Which other columns it carries (Sex, Age, ...) is
  documented nowhere we could read, so only ``Path`` is required, Frontal/Lateral falls back to the
  file name, and the official test's labels always come from ``groundtruth.csv``.

Every problem is one DataError naming the file, the 1-based CSV line and what was expected.
"""

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from chexutils.core.errors import DataError, csv_lines
from chexutils.core.labels import OBSERVATIONS
from chexutils.core.paths import resolve

# Where the released files go under a data folder (the README's layout; the phantom writes the same).
LABELS_REPO = "cheXpert-test-set-labels"  # a clone of rajpurkarlab/cheXpert-test-set-labels
LABELS_REPO_URL = "https://github.com/rajpurkarlab/cheXpert-test-set-labels"
LABELS_REPO_COMMIT = "a03eb3438ca55c28eb4379dd0dd09e3b38c0c414"  # a03eb34, the commit `make public-labels` checks out
GROUNDTRUTH = "groundtruth.csv"
REPORT_LABELS_CSV = "labeler/chexpert_labels.csv"  # the CheXpert report labeler's output for the 500 test studies
BENCHMARK_READERS = ("bc4", "bc6", "bc8")  # the three radiologists compared against
REFERENCE_READERS = ("bc1", "bc2", "bc3", "bc5", "bc7")  # the five whose majority is the reference
CHEXLOCALIZE = "CheXpert"  # CheXlocalize's folder: test/, test_labels.csv, val/, val_labels.csv
TEST_IMAGES_CSV = "test_labels.csv"

RELEASE_PREFIX = r"(?:CheXpert-v1\.0(?:-small)?/|CheXpert/)?"
STUDY_PATTERN = RELEASE_PREFIX + r"(?P<folder>test|valid|val)/(?P<patient>patient\d+)/(?P<study>study\d+)/?$"
IMAGE_PATTERN = (
    RELEASE_PREFIX + r"(?P<folder>test|valid|val)/(?P<patient>patient\d+)/(?P<study>study\d+)/"
    r"(?P<view>view\d+)_(?P<kind>frontal|lateral)\.jpg$"
)
EXPECTED_STUDY = "[CheXpert-v1.0/]{test|valid}/patientN/studyN"
EXPECTED_PATH = "[CheXpert-v1.0[-small]/]{test|valid|val}/patientN/studyN/viewN_{frontal|lateral}.jpg"


def reader_file(labels_dir, reader: str) -> Path:
    """The released file of one radiologist (``bc4`` -> benchmark_radiologists/bc4.csv, ``bc1`` -> groundtruth/bc1_gt.csv)."""
    folder = Path(labels_dir) / "radiologists"
    if reader in BENCHMARK_READERS:
        return folder / "benchmark_radiologists" / f"{reader}.csv"
    if reader in REFERENCE_READERS:
        return folder / "groundtruth" / f"{reader}_gt.csv"
    raise DataError(f"unknown radiologist {reader!r}; known: {', '.join(BENCHMARK_READERS + REFERENCE_READERS)}")


def _read_csv(path: Path, what: str) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"{path}: file does not exist; expected {what}")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not a readable CSV ({err}); expected {what}") from None
    if frame.empty:
        raise DataError(f"{path} line 2: no data rows after the header; expected {what}")
    frame.columns = [c.strip() for c in frame.columns]
    return frame


def parse_keys(column: pd.Series, pattern: str, path: Path, name: str, expected: str) -> pd.DataFrame:
    """The parsed parts of a Study / Path column; a value matching neither release is a DataError."""
    parts = column.str.strip().str.extract("^" + pattern)
    bad = parts["patient"].isna().to_numpy()
    if bad.any():
        first = column.iloc[int(np.argmax(bad))]
        raise DataError(
            f"{path} {csv_lines(np.flatnonzero(bad))}: {name} {first!r} matches neither the CheXpert release "
            f"nor CheXlocalize; expected {expected}"
        )
    parts["key"] = parts["patient"] + "/" + parts["study"]
    return parts


def _binary(frame: pd.DataFrame, columns, path: Path) -> pd.DataFrame:
    """Label columns as float 0/1, by name; any other value is a DataError with its line."""
    out = {}
    for obs in columns:
        text = frame[obs].str.strip()
        bad = ~text.isin(("0", "1", "0.0", "1.0")).to_numpy()
        if bad.any():
            raise DataError(
                f"{path} {csv_lines(np.flatnonzero(bad))}: column {obs!r} has value "
                f"{frame[obs].iloc[int(np.argmax(bad))]!r}; expected 0 or 1"
            )
        out[obs] = text.astype(float).to_numpy()
    return pd.DataFrame(out, index=frame.index)


def read_study_labels(path, observations=OBSERVATIONS) -> pd.DataFrame:
    """``groundtruth.csv`` or one radiologist's file: index = study key (``patientN/studyN``), columns = ``observations``.

    Columns are taken by name, so the radiologists' files (Lung Lesion before Lung Opacity) read the same.
    """
    path = Path(path)
    frame = _read_csv(path, "a study-level label file with a Study column and the observations as 0/1")
    missing = [c for c in ("Study", *observations) if c not in frame.columns]
    if missing:
        raise DataError(
            f"{path} line 1: missing column(s) {', '.join(map(repr, missing))}; "
            "expected Study and one 0/1 column per observation"
        )
    keys = parse_keys(frame["Study"], STUDY_PATTERN, path, "Study", EXPECTED_STUDY)
    dup = keys["key"].duplicated(keep=False).to_numpy()
    if dup.any():
        raise DataError(
            f"{path} {csv_lines(np.flatnonzero(dup))}: study {keys['key'][dup].iloc[0]!r} appears twice; "
            "expected one row per study"
        )
    labels = _binary(frame, list(observations), path)
    labels.index = pd.Index(keys["key"], name="study")
    return labels


def read_report_labels(path, observations=OBSERVATIONS) -> pd.DataFrame:
    """The report labeler's study-level labels (``labeler/chexpert_labels.csv``): index = study key,
    values 1.0 / 0.0 / -1.0 and NaN for blank (not mentioned), columns by name; any other value is a DataError."""
    path = Path(path)
    frame = _read_csv(path, "a study-level report-label file with a Study column and 1.0 / 0.0 / -1.0 / blank")
    missing = [c for c in ("Study", *observations) if c not in frame.columns]
    if missing:
        raise DataError(
            f"{path} line 1: missing column(s) {', '.join(map(repr, missing))}; expected Study and 14 labels"
        )
    keys = parse_keys(frame["Study"], STUDY_PATTERN, path, "Study", EXPECTED_STUDY)
    dup = keys["key"].duplicated(keep=False).to_numpy()
    if dup.any():
        raise DataError(f"{path} {csv_lines(np.flatnonzero(dup))}: study {keys['key'][dup].iloc[0]!r} appears twice")
    out = {}
    for obs in observations:
        text = frame[obs].str.strip()
        bad = ~text.isin(("1", "0", "-1", "1.0", "0.0", "-1.0", "")).to_numpy()
        if bad.any():
            raise DataError(
                f"{path} {csv_lines(np.flatnonzero(bad))}: column {obs!r} has value "
                f"{frame[obs].iloc[int(np.argmax(bad))]!r}; expected 1.0, 0.0, -1.0 or blank"
            )
        out[obs] = pd.to_numeric(text.where(text != ""), errors="coerce").to_numpy(float)
    return pd.DataFrame(out, index=pd.Index(keys["key"], name="study"))


def read_readers(labels_dir, readers=BENCHMARK_READERS + REFERENCE_READERS) -> dict[str, pd.DataFrame]:
    """Each radiologist's reads (study x observation, 0/1), read by column name from the released layout."""
    return {r: read_study_labels(reader_file(labels_dir, r)) for r in readers}


def majority_vote(reads: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Positive where more than half of the readers read positive (5 readers: at least 3); studies all must share."""
    frames = list(reads.values())
    studies = frames[0].index
    for name, frame in reads.items():
        if not frame.index.sort_values().equals(studies.sort_values()):
            raise DataError(f"reader {name}: reads other studies than {next(iter(reads))}; expected the same studies")
    total = sum(frame.loc[studies] for frame in frames)
    return (total * 2 > len(frames)).astype(float)


def read_image_labels(path, root=None, observations=None) -> pd.DataFrame:
    """A per-image label file (CheXlocalize ``test_labels.csv`` / ``val_labels.csv``) as an image frame.

    Adds ``patient``, ``study`` (key), ``view``, ``frontal``, ``folder``, ``line`` and ``image`` (absolute
    path: ``root`` / Path, ``root`` defaulting to the CSV's folder, or its parent for release-prefixed
    Paths). Label columns present among ``observations`` (default: all 14) are parsed as 0/1; Sex,
    Age, Frontal/Lateral and AP/PA are optional.
    """
    path = Path(path)
    frame = _read_csv(path, "a per-image label file with a Path column")
    if "Path" not in frame.columns:
        raise DataError(f"{path} line 1: missing column 'Path'; expected one row per image with its Path")
    parts = parse_keys(frame["Path"], IMAGE_PATTERN, path, "Path", EXPECTED_PATH)
    dup = frame["Path"].duplicated(keep=False).to_numpy()
    if dup.any():
        raise DataError(
            f"{path} {csv_lines(np.flatnonzero(dup))}: duplicate Path {frame['Path'][dup].iloc[0]!r}; "
            "expected each image once"
        )
    present = [o for o in (OBSERVATIONS if observations is None else observations) if o in frame.columns]
    out = pd.concat([frame[["Path"]], _labels_or_blank(frame, present, path)], axis=1)
    out["patient"], out["study"], out["view"] = parts["patient"], parts["key"], parts["view"]
    frontal = parts["kind"].eq("frontal")
    if "Frontal/Lateral" in frame.columns:
        frontal = frame["Frontal/Lateral"].str.strip().eq("Frontal")
    out["frontal"] = frontal.to_numpy()
    out["folder"] = parts["folder"]
    out["line"] = np.arange(2, len(frame) + 2)
    prefixed = frame["Path"].str.startswith("CheXpert")
    base = Path(root) if root is not None else path.resolve().parent
    out["image"] = [str((base.parent if p and root is None else base) / rel) for p, rel in zip(prefixed, frame["Path"])]
    return out


def _labels_or_blank(frame: pd.DataFrame, columns, path: Path) -> pd.DataFrame:
    """0/1 labels where given; blank cells stay NaN (a per-image file may leave observations out)."""
    out = {}
    for obs in columns:
        text = frame[obs].str.strip()
        bad = ~text.isin(("0", "1", "0.0", "1.0", "")).to_numpy()
        if bad.any():
            raise DataError(
                f"{path} {csv_lines(np.flatnonzero(bad))}: column {obs!r} has value "
                f"{frame[obs].iloc[int(np.argmax(bad))]!r}; expected 0, 1 or blank"
            )
        out[obs] = pd.to_numeric(text.where(text != ""), errors="coerce").to_numpy(float)
    return pd.DataFrame(out, index=frame.index)


def join_study_labels(
    images: pd.DataFrame, labels: pd.DataFrame, images_name: str = "image file", labels_name: str = "label file"
) -> pd.DataFrame:
    """Image rows with their study's labels (by patient/study key), replacing any per-image labels.

    A labelled study with no image, or an image whose study has no label, is a DataError.
    """
    no_images = labels.index.difference(pd.Index(images["study"].unique()))
    if len(no_images):
        raise DataError(
            f"{labels_name}: {len(no_images)} labelled stud{'y has' if len(no_images) == 1 else 'ies have'} "
            f"no image in {images_name} (first: {no_images[0]!r}); expected every study's images"
        )
    unlabelled = ~images["study"].isin(labels.index).to_numpy()
    if unlabelled.any():
        first = images["Path"].iloc[int(np.argmax(unlabelled))]
        raise DataError(
            f"{images_name} {csv_lines(np.flatnonzero(unlabelled))}: image {first!r} belongs to a study "
            f"with no label in {labels_name}; expected a label for every image's study"
        )
    out = images.drop(columns=[o for o in OBSERVATIONS if o in images.columns])
    joined = labels.reindex(columns=list(OBSERVATIONS)).loc[out["study"]].to_numpy()
    return pd.concat([out.reset_index(drop=True), pd.DataFrame(joined, columns=list(OBSERVATIONS))], axis=1)


@dataclass
class OfficialTest:
    """The official test set as read: image rows with labels, the reference labels and every reader's reads."""

    frame: pd.DataFrame  # one row per image: Path, patient, study, frontal, image, 14 labels
    labels: pd.DataFrame  # study x observation, the 5-reader majority (groundtruth.csv)
    readers: dict[str, pd.DataFrame]  # reader name -> study x observation reads (may be empty)
    source: dict  # which files were read

    @property
    def patients(self) -> pd.Series:
        """study key -> patient, for bootstrap resampling of whole patients."""
        return self.frame.drop_duplicates("study").set_index("study")["patient"]

    @property
    def benchmark(self) -> dict[str, pd.DataFrame]:
        return {r: v for r, v in self.readers.items() if r in BENCHMARK_READERS}


def find_official_test(data_dir) -> tuple[Path, Path]:
    """(labels folder, CheXlocalize folder) under ``data_dir``, or a DataError saying where the files go."""
    data_dir = resolve(data_dir)
    labels_dir, images_dir = data_dir / LABELS_REPO, data_dir / CHEXLOCALIZE
    for needed in (labels_dir / GROUNDTRUTH, images_dir / TEST_IMAGES_CSV):
        if not needed.is_file():
            raise DataError(
                f"{needed}: file does not exist; expected the official test set under {data_dir}: "
                f"{LABELS_REPO}/ (a clone of rajpurkarlab/cheXpert-test-set-labels: `make public-labels`) and "
                f"{CHEXLOCALIZE}/{{test/, {TEST_IMAGES_CSV}}} from the CheXlocalize release"
            )
    return labels_dir, images_dir


def has_official_test(data_dir) -> bool:
    """Whether ``data_dir`` holds the official test set in the layout ``find_official_test`` expects."""
    try:
        find_official_test(data_dir)
    except DataError:
        return False
    return True


def read_official_test(data_dir, check_files: bool = True, readers: bool = True) -> OfficialTest:
    """Images (CheXlocalize test_labels.csv), labels (groundtruth.csv) and the 8 radiologists' reads."""
    labels_dir, images_dir = find_official_test(data_dir)
    images = read_image_labels(images_dir / TEST_IMAGES_CSV, observations=())  # labels come from groundtruth.csv
    labels = read_study_labels(labels_dir / GROUNDTRUTH)
    frame = join_study_labels(images, labels, str(images_dir / TEST_IMAGES_CSV), str(labels_dir / GROUNDTRUTH))
    if check_files:
        missing = np.array([not os.path.isfile(p) for p in frame["image"]])
        if missing.any():
            raise DataError(
                f"{images_dir / TEST_IMAGES_CSV} {csv_lines(np.flatnonzero(missing))}: image "
                f"{frame['image'][missing].iloc[0]} does not exist; expected the test images beside the CSV"
            )
    reads = read_readers(labels_dir) if readers else {}
    for name, read in reads.items():
        if not read.index.sort_values().equals(labels.index.sort_values()):
            raise DataError(
                f"{reader_file(labels_dir, name)}: reads other studies than {labels_dir / GROUNDTRUTH}; "
                "expected the same 500 studies"
            )
    source = {
        "labels": str(labels_dir / GROUNDTRUTH),
        "images": str(images_dir / TEST_IMAGES_CSV),
        "readers": {r: str(reader_file(labels_dir, r)) for r in reads},
    }
    return OfficialTest(frame, labels, reads, source)
