"""Read MIMIC-CXR-JPG (v2.0.0 / v2.1.0) in its released layout into the frame the CheXpert reader makes.

Formats, as verified against public sources (read, not copied):

- The PhysioNet project page "MIMIC-CXR-JPG - chest radiographs with structured labels", version
  2.1.0 (https://physionet.org/content/mimic-cxr-jpg/2.1.0/, "Data Description"; read in a public copy
  of the page's text, since the files themselves need credentialed access):

  * ``mimic-cxr-2.0.0-split.csv.gz``: columns ``dicom_id``, ``study_id``, ``subject_id``, ``split``
    (in that order), one row per image; ``split`` is one of ``train``, ``validate``, ``test``.
  * ``mimic-cxr-2.0.0-metadata.csv.gz``: one row per image with ``dicom_id`` (the stem of the JPG's
    file name), ``PerformedProcedureStepDescription``, ``ViewPosition`` ("AP", "PA", "LATERAL", ...),
    ``Rows``, ``Columns``, ``StudyDate``, ``StudyTime``, ``ProcedureCodeSequence_CodeMeaning``,
    ``ViewCodeSequence_CodeMeaning``, ``PatientOrientationCodeSequence_CodeMeaning``. The page's list
    leaves out ``subject_id`` and ``study_id``, which the file also holds: torchxrayvision's
    ``MIMIC_Dataset`` indexes the metadata by them (below). The column ORDER
    ``dicom_id,subject_id,study_id,PerformedProcedureStepDescription,ViewPosition,Rows,Columns,
    StudyDate,StudyTime,ProcedureCodeSequence_CodeMeaning,ViewCodeSequence_CodeMeaning,
    PatientOrientationCodeSequence_CodeMeaning`` (what the tests write) is only seen in public code
    excerpts (a mock-data generator) whose repository the search index does not name — not in an
    official source; the reader goes by name, so the order does not matter to it.
  * ``mimic-cxr-2.0.0-chexpert.csv.gz``: study level, ``subject_id``, ``study_id``, then the 14
    CheXpert observations by name; each label is ``1.0``, ``0.0``, ``-1.0`` or missing (blank) with the
    CheXpert meaning. The page lists the labels in the CheXpert article's order; public code excerpts
    that read the file (repositories not named by the index, so not citable) see them alphabetically
    (Atelectasis, Cardiomegaly, ..., No Finding, ..., Support Devices), the order the tests write.
    Columns are read by name, so either order works.
    "When CheXpert or NegBio were unable to derive a label no label is generated and no row appears
    for the study": 8 of the 227,835 studies (no findings or impression section) have images and no
    label row.
  * Images: ``files/p<first two digits of subject_id>/p<subject_id>/s<study_id>/<dicom_id>.jpg``
    (the page's example: ``files/p10/p10000032/s50414267/02aa804e-bde0afdd-112c0b34-7bc16630-4e384014.jpg``).
  * ``mimic-cxr-2.1.0-test-set-labeled.csv`` (v2.1.0): one radiologist's labels of the test studies,
    "fifteen columns", ``study_id`` then "the categories used in CheXpert". The exact column names
    (the page writes "No Findings" where the labeler writes "No Finding") could not be verified, so
    that file is NOT read here.

- torchxrayvision, ``mlmed/torchxrayvision`` ``torchxrayvision/datasets.py`` at commit
  891eae4ce2c99e869072f02e6281eed3cc71cf51, ``MIMIC_Dataset``: joins the chexpert and metadata CSVs
  on (``subject_id``, ``study_id``), filters on ``ViewPosition``, and opens
  ``p<subject_id[:2]>/p<subject_id>/s<study_id>/<dicom_id>.jpg`` under ``files/``.

How the files are joined here: images are the split file's rows; the metadata joins them by
``dicom_id`` (its ``subject_id`` / ``study_id`` must agree); the study labels join by (``subject_id``,
``study_id``) — never by row order. Policy for rows that do not match:

- an image whose study has no label row is DROPPED and counted (the release has such studies, see
  above): ``frame.attrs["dropped_unlabelled_images"]`` / ``["dropped_unlabelled_studies"]``;
- a label row whose study has no image in the split file is a DataError (the page describes the
  labelled studies as "a strict subset of studies in MIMIC-CXR", so the files come from different
  releases or were cut);
- an image in the split file and not in the metadata, or the other way round, is a DataError.

Every problem with the input is one DataError naming the file, the 1-based line(s) (of the
decompressed CSV; the header is line 1) and what was expected.
"""

import csv
import os
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from chexutils.core.errors import DataError, csv_lines
from chexutils.core.labels import OBSERVATIONS
from chexutils.data.datasets import DatasetSpec, register_dataset

SPLIT_CSV = "mimic-cxr-2.0.0-split.csv.gz"
METADATA_CSV = "mimic-cxr-2.0.0-metadata.csv.gz"
LABELS_CSV = "mimic-cxr-2.0.0-chexpert.csv.gz"
IMAGES_DIR = "files"
DEFAULT_ROOT = "data/mimic-cxr-jpg"

# The released headers, in file order (what the tests write; the reader goes by name).
SPLIT_COLUMNS = ("dicom_id", "study_id", "subject_id", "split")
METADATA_COLUMNS = (
    "dicom_id",
    "subject_id",
    "study_id",
    "PerformedProcedureStepDescription",
    "ViewPosition",
    "Rows",
    "Columns",
    "StudyDate",
    "StudyTime",
    "ProcedureCodeSequence_CodeMeaning",
    "ViewCodeSequence_CodeMeaning",
    "PatientOrientationCodeSequence_CodeMeaning",
)
LABEL_COLUMNS = ("subject_id", "study_id", *sorted(OBSERVATIONS))
REQUIRED_METADATA = ("dicom_id", "subject_id", "study_id", "ViewPosition")  # the columns this reader uses

SPLITS = ("train", "validate", "test")  # the official split's values
FOLDER = {"train": "train", "validate": "valid", "test": "test"}  # the CheXpert frame's `folder` names
VIEW_GROUPS = {"frontal": ("PA", "AP"), "lateral": ("LATERAL", "LL")}
ALLOWED_LABELS = "1.0, 0.0, -1.0 or blank"
LABEL_TEXT = {"1.0": 1.0, "0.0": 0.0, "-1.0": -1.0, "": np.nan}  # the released spelling of the label values
DICOM_PATTERN = r"^[0-9A-Za-z][0-9A-Za-z-]*$"  # e.g. 02aa804e-bde0afdd-112c0b34-7bc16630-4e384014

FRAME_COLUMNS = ("Path", *OBSERVATIONS, "image", "patient", "study", "view", "frontal", "split", "folder", "line")
FRAME_COLUMNS += ("subject_id", "study_id", "dicom_id")  # the frame's first columns; the metadata's others follow


def read_mimic(root=DEFAULT_ROOT, split=None, views=None, check_files: bool = True) -> pd.DataFrame:
    """Read the MIMIC-CXR-JPG release under ``root`` into one row per image.

    The frame has the CheXpert reader's columns — ``image`` (absolute path), ``patient``
    (``p<subject_id>``), ``study`` (``p<subject_id>/s<study_id>``), ``view`` (the ``ViewPosition``:
    PA, AP, LATERAL, LL, ...; blank where the metadata has none), ``frontal`` (PA or AP),
    ``folder`` (train / valid / test), ``line`` (the image's line in the split file) and the 14
    observations as float 1.0 / 0.0 / -1.0 / NaN — plus ``Path`` (relative to ``root``), ``split``
    (the official value: train / validate / test), ``subject_id``, ``study_id``, ``dicom_id`` and
    the metadata's other columns as text.

    ``split``: None (all images) or one or more of train / validate / test. ``views``: None (all)
    or one or more of ``frontal`` (PA, AP), ``lateral`` (LATERAL, LL) or a ``ViewPosition`` value.
    ``check_files``: fail (naming the split file's line) on a selected image missing from disk.
    """
    root = Path(root)
    split_path, meta_path, labels_path = (_locate(root, name) for name in (SPLIT_CSV, METADATA_CSV, LABELS_CSV))
    wanted_splits = _as_tuple(split, SPLITS, "split")

    images = _read_csv(split_path, SPLIT_COLUMNS, "the official split, one row per image")
    meta = _read_csv(meta_path, REQUIRED_METADATA, "the image metadata, one row per image")
    labels = _read_csv(labels_path, ("subject_id", "study_id", *OBSERVATIONS), "the study labels, one row per study")

    for frame, path in ((images, split_path), (meta, meta_path), (labels, labels_path)):
        for column in ("subject_id", "study_id"):
            frame[column] = _parse_ids(frame[column], column, path)
    for frame, path in ((images, split_path), (meta, meta_path)):
        _check_dicom_ids(frame, path)
    _check_splits(images, split_path)
    values = {name: _parse_labels(labels[name], name, labels_path) for name in OBSERVATIONS}

    meta_of_image = _join_metadata(images, split_path, meta, meta_path)
    study_keys = pd.MultiIndex.from_arrays([labels["subject_id"], labels["study_id"]])
    image_keys = pd.MultiIndex.from_arrays([images["subject_id"], images["study_id"]])
    _check_label_keys(study_keys, labels_path, image_keys, split_path)
    label_row = study_keys.get_indexer(image_keys)  # -1: the image's study has no label row
    labelled = label_row >= 0
    dropped_images = int((~labelled).sum())
    dropped_studies = int(len(image_keys[~labelled].unique()))

    kept = images.loc[labelled].reset_index(drop=True)
    meta_kept = meta_of_image.loc[labelled].reset_index(drop=True)
    subjects, studies = kept["subject_id"].to_numpy(), kept["study_id"].to_numpy()
    dicoms = kept["dicom_id"].to_numpy(dtype=object)
    patient = np.array([f"p{s}" for s in subjects], dtype=object)
    study = np.array([f"p{a}/s{b}" for a, b in zip(subjects, studies, strict=True)], dtype=object)
    relative = np.array(
        [f"{IMAGES_DIR}/{p[:3]}/{s}/{d}.jpg" for p, s, d in zip(patient, study, dicoms, strict=True)],
        dtype=object,
    )  # p[:3]: 'p' and the subject_id's first two digits, the release's top folder (p10 ... p19)
    base = str(root.resolve()) + os.sep
    out = pd.DataFrame({"Path": relative})
    for name in OBSERVATIONS:
        out[name] = values[name][label_row[labelled]]
    out["image"] = np.array([base + r for r in relative], dtype=object)
    out["patient"] = patient
    out["study"] = study
    out["view"] = meta_kept["ViewPosition"].str.strip().str.upper()
    out["frontal"] = out["view"].isin(VIEW_GROUPS["frontal"])
    out["split"] = kept["split"]
    out["folder"] = out["split"].map(FOLDER)
    out["line"] = kept["line"].to_numpy()
    out["subject_id"] = subjects
    out["study_id"] = studies
    out["dicom_id"] = dicoms
    for column in METADATA_COLUMNS:
        if column in meta_kept.columns and column not in out.columns and column != "ViewPosition":
            out[column] = meta_kept[column].to_numpy()

    out = out[out["split"].isin(wanted_splits)]
    if out.empty:
        raise DataError(
            f"{split_path}: no labelled image in split {', '.join(wanted_splits)}; expected at least one "
            f"(splits present: {', '.join(sorted(kept['split'].unique())) or 'none'})"
        )
    out = _select_views(out, views, split_path)
    if check_files:
        _check_files_exist(out, split_path)
    out = out.reset_index(drop=True)
    out.attrs["dropped_unlabelled_images"] = dropped_images
    out.attrs["dropped_unlabelled_studies"] = dropped_studies
    return out


def image_path(subject_id, study_id, dicom_id) -> str:
    """The released relative path of one image: ``files/p10/p10000032/s50414267/<dicom_id>.jpg``."""
    subject = str(int(subject_id))
    return f"{IMAGES_DIR}/p{subject[:2]}/p{subject}/s{int(study_id)}/{dicom_id}.jpg"


def _as_tuple(value, known, what: str) -> tuple[str, ...]:
    if value is None:
        return tuple(known)
    items = (value,) if isinstance(value, str) else tuple(value)
    unknown = [v for v in items if v not in known]
    if unknown or not items:
        raise ValueError(f"unknown {what} {', '.join(map(repr, unknown)) or '(none given)'}; known: {', '.join(known)}")
    return items


def _locate(root: Path, name: str) -> Path:
    """The released ``name`` under root; a gunzipped copy (``name`` without ``.gz``) is read too."""
    path = root / name
    if not path.is_file() and (root / name.removesuffix(".gz")).is_file():
        return root / name.removesuffix(".gz")
    if not path.is_file():
        raise DataError(
            f"{path}: file does not exist; expected the MIMIC-CXR-JPG release under {root} "
            f"({SPLIT_CSV}, {METADATA_CSV}, {LABELS_CSV}, {IMAGES_DIR}/)"
        )
    return path


def _read_csv(path: Path, required, what: str) -> pd.DataFrame:
    """All cells as strings (blank stays ''); a ``line`` column; one DataError per problem."""
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path} line 1: empty file; expected a header with {', '.join(required)}") from None
    except pd.errors.ParserError as err:
        raise DataError(f"{path}: not a well-formed CSV ({err}); expected {what}") from None
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not a UTF-8 text CSV ({err}); expected {what}") from None
    except (OSError, EOFError, zlib.error) as err:  # not gzip, or a cut-off download
        raise DataError(f"{path}: cannot be decompressed ({err}); expected a gzipped CSV with {what}") from None
    frame.columns = [c.strip() for c in frame.columns]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DataError(
            f"{path} line 1: missing column(s) {', '.join(map(repr, missing))}; expected {what} with the "
            f"columns {', '.join(required)} (found {', '.join(frame.columns)})"
        )
    if frame.empty:
        raise DataError(f"{path} line 2: no data rows after the header; expected {what}")
    if path.suffix != ".gz":  # a cut-off .gz fails its own end-of-stream and CRC checks above
        _check_row_lengths(path, len(frame.columns))
    frame["line"] = np.arange(2, len(frame) + 2)
    return frame


def _check_row_lengths(path: Path, fields: int) -> None:
    """A row with fewer fields than the header (a cut-off file) is refused: pandas would fill blanks."""
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        next(reader, None)
        short = [(reader.line_num, len(row)) for row in reader if row and len(row) < fields]
    if short:
        lines = ", ".join(str(line) for line, _ in short[:5]) + (
            f" and {len(short) - 5} more" if len(short) > 5 else ""
        )
        raise DataError(
            f"{path} line{'s' if len(short) > 1 else ''} {lines}: {short[0][1]} field(s), expected {fields} "
            "as in the header (a cut-off or damaged file?)"
        )


def _first_bad(column: pd.Series, bad: np.ndarray, path: Path, name: str, expected: str):
    first = column.iloc[int(np.argmax(bad))]
    raise DataError(
        f"{path} {csv_lines(np.flatnonzero(bad))}: column {name!r} has value {first!r}; expected {expected}"
    )


def _parse_ids(column: pd.Series, name: str, path: Path) -> np.ndarray:
    """Integer ids (the files join on their values, so ``010`` and ``10`` are one id)."""
    bad = ~(column.str.isdigit() & column.str.isascii() & (column.str.len() <= 18)).to_numpy()
    if bad.any():
        _first_bad(column, bad, path, name, "an integer id (digits only)")
    return column.astype("int64").to_numpy()


def _check_dicom_ids(frame: pd.DataFrame, path: Path) -> None:
    bad = ~frame["dicom_id"].str.match(DICOM_PATTERN).to_numpy()
    if bad.any():
        _first_bad(frame["dicom_id"], bad, path, "dicom_id", "a DICOM id of letters, digits and '-'")
    dup = frame["dicom_id"].duplicated(keep=False).to_numpy()
    if dup.any():
        first = frame["dicom_id"].iloc[int(np.argmax(dup))]
        raise DataError(
            f"{path} {csv_lines(np.flatnonzero(dup))}: duplicate dicom_id {first!r}; expected each image once"
        )


def _check_splits(images: pd.DataFrame, path: Path) -> None:
    bad = ~images["split"].isin(SPLITS).to_numpy()
    if bad.any():
        _first_bad(images["split"], bad, path, "split", " or ".join(SPLITS))


def _parse_labels(column: pd.Series, name: str, path: Path) -> np.ndarray:
    if column.isin(LABEL_TEXT).all():  # the released spelling: a dictionary lookup, no number parsing
        return column.map(LABEL_TEXT).to_numpy(dtype=float)
    text = column.str.strip()
    values = pd.to_numeric(text.where(text != ""), errors="coerce").to_numpy(dtype=float)
    bad = (text != "").to_numpy() & ~np.isin(values, (1.0, 0.0, -1.0))
    if bad.any():
        _first_bad(column, bad, path, name, ALLOWED_LABELS)
    return values


def _join_metadata(images: pd.DataFrame, split_path: Path, meta: pd.DataFrame, meta_path: Path) -> pd.DataFrame:
    """The metadata row of each image (by dicom_id), in the split file's order; mismatches are errors."""
    position = pd.Index(meta["dicom_id"]).get_indexer(images["dicom_id"])  # ids are unique by now
    in_meta = position >= 0
    if not in_meta.all():
        first = images["dicom_id"].iloc[int(np.argmax(~in_meta))]
        raise DataError(
            f"{split_path} {csv_lines(np.flatnonzero(~in_meta))}: dicom_id {first!r} has no row in {meta_path.name}; "
            "expected every image of the split in the metadata (files from one release)"
        )
    in_split = np.zeros(len(meta), dtype=bool)
    in_split[position] = True
    if not in_split.all():
        first = meta["dicom_id"].iloc[int(np.argmax(~in_split))]
        raise DataError(
            f"{meta_path} {csv_lines(np.flatnonzero(~in_split))}: dicom_id {first!r} has no row in {split_path.name}; "
            "expected every image of the metadata in the split (files from one release)"
        )
    joined = meta.iloc[position].reset_index(drop=True)
    differ = (
        (joined["subject_id"] != images["subject_id"].to_numpy())
        | (joined["study_id"] != images["study_id"].to_numpy())
    ).to_numpy()
    if differ.any():
        i = int(np.argmax(differ))
        raise DataError(
            f"{meta_path} {csv_lines(joined['line'].to_numpy()[differ] - 2)}: dicom_id {joined['dicom_id'].iloc[i]!r} "
            f"belongs to subject {joined['subject_id'].iloc[i]} / study {joined['study_id'].iloc[i]} here but to "
            f"subject {images['subject_id'].iloc[i]} / study {images['study_id'].iloc[i]} in {split_path.name} line "
            f"{images['line'].iloc[i]}; expected the same subject_id and study_id in both files"
        )
    return joined


def _check_label_keys(
    study_keys: pd.MultiIndex, labels_path: Path, image_keys: pd.MultiIndex, split_path: Path
) -> None:
    dup = study_keys.duplicated(keep=False)
    if dup.any():
        subject, study = study_keys[int(np.argmax(dup))]
        raise DataError(
            f"{labels_path} {csv_lines(np.flatnonzero(dup))}: subject_id {subject}, study_id {study} appears more "
            "than once; expected one label row per study"
        )
    orphan = ~study_keys.isin(image_keys)
    if orphan.any():
        subject, study = study_keys[int(np.argmax(orphan))]
        raise DataError(
            f"{labels_path} {csv_lines(np.flatnonzero(orphan))}: study {study} of subject {subject} has labels but no "
            f"image in {split_path.name}; expected every labelled study to have images (files from one release)"
        )


def _select_views(frame: pd.DataFrame, views, split_path: Path) -> pd.DataFrame:
    if views is None:
        return frame
    items = (views,) if isinstance(views, str) else tuple(views)
    positions = set()
    for item in items:
        positions.update(VIEW_GROUPS.get(item.lower(), (item.strip().upper(),)))
    chosen = frame[frame["view"].isin(positions)]
    if chosen.empty and not frame.empty:
        present = ", ".join(sorted(v or "(blank)" for v in frame["view"].unique()))
        raise DataError(
            f"{split_path}: no image of the selected split(s) has view {', '.join(map(str, items))}; views present: "
            f"{present}; expected one of {', '.join(VIEW_GROUPS)} or a ViewPosition value"
        )
    return chosen


def _check_files_exist(frame: pd.DataFrame, split_path: Path) -> None:
    missing = np.array([not os.path.isfile(p) for p in frame["image"]], dtype=bool)
    if missing.any():
        first = frame["image"].iloc[int(np.argmax(missing))]
        raise DataError(
            f"{split_path} {csv_lines(frame['line'].to_numpy()[missing] - 2)}: image {first} does not exist; "
            f"expected the JPGs under {IMAGES_DIR}/ beside the CSVs (or pass check_files=False)"
        )


register_dataset(
    DatasetSpec(
        name="mimic-cxr-jpg",
        read=read_mimic,
        description="MIMIC-CXR-JPG v2.0.0/v2.1.0 (Beth Israel Deaconess, Boston): CheXpert-labeler study labels, official split",
        splits=SPLITS,
        default_root=DEFAULT_ROOT,
        eval_split="test",  # the official test split (report labels from the CheXpert labeler)
        path_pattern=r"^(?:.+/)?files/p\d{2}/(?P<patient>p\d+)/(?P<study>s\d+)/(?P<view>[^/]+)\.jpg$",
    )
)
