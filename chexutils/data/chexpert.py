"""Read and validate CheXpert CSVs (real or phantom) and single images.

Every problem with the input is one `DataError` naming the file, the 1-based CSV line(s) and
what was expected. The checks are vectorised so the real 223k-row train.csv parses in seconds.
"""

import csv
import difflib
import os
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from chexutils.core.errors import DataError, csv_lines
from chexutils.core.io import write_table
from chexutils.core.labels import OBSERVATIONS
from chexutils.core.paths import find_chexpert
from chexutils.data.datasets import DATASETS, DatasetSpec, register_dataset
from chexutils.data.pixels import is_dicom, read_dicom, to_uint8

META_COLUMNS = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA")
CSV_COLUMNS = META_COLUMNS + OBSERVATIONS  # the CheXpert schema, in file order
PARSED_COLUMNS = ("image", "patient", "study", "view", "frontal", "folder", "line")

# e.g. CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg
PATH_PATTERN = (
    r"^(?P<prefix>CheXpert-v1\.0(?:-small)?)/(?P<folder>train|valid|test)/"
    r"(?P<patient>patient\d{5})/(?P<study>study\d+)/(?P<view>view\d+)_(?P<kind>frontal|lateral)\.jpg$"
)
ALLOWED_LABELS = "1.0, 0.0, -1.0 or blank"
SPLITS = ("train", "valid")  # the release's CSVs (the official test set: data/test_set_files.py)
DEEP_GREY_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")  # PIL modes of 16-bit, 32-bit and float grey


def read_chexpert(csv_path, root=None, check_files: bool = True) -> pd.DataFrame:
    """Read a CheXpert-format CSV into a validated frame with parsed columns.

    Adds ``image`` (absolute path), ``patient``, ``study`` (``patientNNNNN/studyN``), ``view``,
    ``frontal`` (bool), ``folder`` (train/valid/test) and ``line`` (1-based CSV line). Label
    columns become float 1.0 / 0.0 / -1.0 / NaN. ``root`` is the folder the ``Path`` column is
    relative to (default: the folder holding the CheXpert folder, i.e. the CSV's grandparent).
    """
    csv_path = Path(csv_path)
    root = Path(root) if root is not None else csv_path.resolve().parent.parent
    frame = _read_raw(csv_path)
    _check_columns(frame, csv_path)
    parts = _parse_paths(frame, csv_path)
    out = frame.copy()
    for name in OBSERVATIONS:
        out[name] = _parse_labels(frame[name], name, csv_path)
    out["Age"] = _parse_age(frame["Age"], csv_path)
    _check_views(frame, csv_path)
    out["patient"] = parts["patient"]
    out["study"] = parts["patient"] + "/" + parts["study"]
    out["view"] = parts["view"]
    out["frontal"] = frame["Frontal/Lateral"].eq("Frontal")
    out["folder"] = parts["folder"]
    out["line"] = np.arange(2, len(frame) + 2)
    absolute = frame["Path"].map(os.path.isabs)  # another site's images (data/site_csv) may live elsewhere
    out["image"] = frame["Path"].where(absolute, str(root.resolve()) + os.sep + frame["Path"])
    if check_files:
        _check_files_exist(out, csv_path)
    return out


def read_chexpert_release(root="data", split=None, views=None, check_files: bool = True) -> pd.DataFrame:
    """The registry's CheXpert reader: ``train.csv`` and / or ``valid.csv`` of the release under ``root``.

    ``root`` holds ``CheXpert-v1.0-small/`` (or ``CheXpert-v1.0/``). ``split``: None (both) or one or
    more of train / valid; the frame is `read_chexpert`'s plus ``split`` (the CSV's name). ``views``:
    None (all) or one or more of ``frontal``, ``lateral`` or an ``AP/PA`` value (AP, PA, LL, RL).
    """
    folder = find_chexpert(root)
    names = SPLITS if split is None else ((split,) if isinstance(split, str) else tuple(split))
    unknown = [name for name in names if name not in SPLITS]
    if unknown or not names:
        raise ValueError(f"unknown split {', '.join(map(repr, unknown)) or '(none given)'}; known: {', '.join(SPLITS)}")
    parts = []
    for name in names:
        part = read_chexpert(folder / f"{name}.csv", root=folder.parent, check_files=check_files)
        part["split"] = name
        parts.append(part)
    frame = pd.concat(parts, ignore_index=True)
    if views is None:
        return frame
    items = (views,) if isinstance(views, str) else tuple(views)
    keep = np.zeros(len(frame), dtype=bool)
    position = frame["AP/PA"].str.strip().str.upper()
    for item in items:
        if item.lower() in ("frontal", "lateral"):
            keep |= frame["frontal"].to_numpy() == (item.lower() == "frontal")
        else:
            keep |= (position == item.strip().upper()).to_numpy()
    if not keep.any():
        raise DataError(
            f"{folder}: no image of split {', '.join(names)} has view {', '.join(map(str, items))}; expected "
            "frontal, lateral or an AP/PA value present in the CSV"
        )
    return frame[keep].reset_index(drop=True)


def read_image(path) -> np.ndarray:
    """Read one image as an (H, W) uint8 grayscale array; a corrupt or truncated file is a DataError.

    DICOM (by name or by its 'DICM' magic) and 16-bit / 32-bit grey images go through
    ``pixels.to_uint8``, the one documented bit-depth rule; 8-bit images are read as they are.
    """
    if is_dicom(path):
        return read_dicom(path)
    try:
        with Image.open(path) as img:
            img.load()  # decodes everything now, so truncation raises here, not later as zeros
            if img.mode in DEEP_GREY_MODES:  # convert("L") would clip these to near-white
                return to_uint8(np.asarray(img))
            if img.mode != "L":
                img = img.convert("L")
            return np.asarray(img, dtype=np.uint8).copy()
    except FileNotFoundError:
        raise DataError(f"{path}: image file does not exist") from None
    except Image.DecompressionBombError as err:
        raise DataError(
            f"{path}: image too large to decode safely ({err}); expected a chest X-ray of at most "
            f"{Image.MAX_IMAGE_PIXELS} pixels"
        ) from None
    except (OSError, UnidentifiedImageError, SyntaxError) as err:
        raise DataError(
            f"{path}: corrupt or truncated image ({err}); expected a readable 8-bit grayscale JPEG"
        ) from None
    except Exception as err:  # any other decoder failure (ValueError, struct.error, ...) is bad input too
        raise DataError(
            f"{path}: cannot decode image ({type(err).__name__}: {err}); expected a readable 8-bit grayscale JPEG"
        ) from None


def write_chexpert_csv(frame: pd.DataFrame, csv_path) -> Path:
    """Write the CheXpert columns of ``frame`` atomically (temp file + rename), labels as 1.0/0.0/-1.0/blank."""
    return write_table(frame.loc[:, list(CSV_COLUMNS)], csv_path, index=False, float_format="%.1f")


def _read_raw(csv_path: Path) -> pd.DataFrame:
    """All cells as strings (blank stays ''), so validation sees exactly what the file holds."""
    if not csv_path.is_file():
        raise DataError(f"{csv_path}: file does not exist; expected a CheXpert CSV")
    if csv_path.stat().st_size == 0:
        raise DataError(f"{csv_path} line 1: empty file; expected a header with columns {', '.join(CSV_COLUMNS)}")
    _check_header_unique(csv_path)  # pandas would rename a repeated column 'X.1' and read the first silently
    try:
        frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False, na_filter=False)
    except pd.errors.ParserError as err:
        raise DataError(f"{csv_path}: not a well-formed CSV ({err})") from None
    except UnicodeDecodeError as err:
        raise DataError(f"{csv_path}: not a UTF-8 text CSV ({err})") from None
    if frame.empty:
        raise DataError(f"{csv_path} line 2: no data rows after the header; expected one row per image")
    _check_row_lengths(csv_path, len(frame.columns))
    return frame


def _check_header_unique(csv_path: Path) -> None:
    """Each header name once: two 'Edema' columns may disagree, and no reader can know which one is meant."""
    try:
        with open(csv_path, newline="", encoding="utf-8") as handle:
            header = next(csv.reader(handle), [])
    except (UnicodeDecodeError, csv.Error):
        return  # pandas' reading reports these, naming the file
    positions = {}
    for i, name in enumerate(header, start=1):
        positions.setdefault(name.strip(), []).append(i)
    twice = {name: where for name, where in positions.items() if len(where) > 1}
    if twice:
        name, where = next(iter(twice.items()))
        more = (
            f" (and {len(twice) - 1} more repeated column(s): {', '.join(map(repr, list(twice)[1:4]))})"
            if len(twice) > 1
            else ""
        )
        raise DataError(
            f"{csv_path} line 1: column {name!r} appears {len(where)} times (columns "
            f"{', '.join(map(str, where))}){more}; expected each column once"
        )


def _check_row_lengths(csv_path: Path, fields: int) -> None:
    """A row with another number of fields than the header is refused: fewer (a file cut off) would be
    read as blanks (negative), more (a trailing comma) would shift every column by one."""
    with open(csv_path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        next(reader, None)
        wrong = [(reader.line_num, len(row)) for row in reader if row and len(row) != fields]
    if wrong:
        lines = ", ".join(str(line) for line, _ in wrong[:5]) + (
            f" and {len(wrong) - 5} more" if len(wrong) > 5 else ""
        )
        why = "a trailing comma?" if wrong[0][1] > fields else "a cut-off or damaged file?"
        raise DataError(
            f"{csv_path} line{'s' if len(wrong) > 1 else ''} {lines}: {wrong[0][1]} field(s), expected "
            f"{fields} as in the header ({why})"
        )


def _check_columns(frame: pd.DataFrame, csv_path: Path) -> None:
    missing = [c for c in CSV_COLUMNS if c not in frame.columns]
    if not missing:
        return
    extra = [c for c in frame.columns if c not in CSV_COLUMNS]
    hints = []
    for col in missing:
        close = difflib.get_close_matches(col, extra, n=1, cutoff=0.6)
        hints.append(f"{col!r}" + (f" (found {close[0]!r} — renamed?)" if close else ""))
    raise DataError(
        f"{csv_path} line 1: missing column(s) {', '.join(hints)}; expected the CheXpert columns {', '.join(CSV_COLUMNS)}"
    )


def _parse_paths(frame: pd.DataFrame, csv_path: Path) -> pd.DataFrame:
    """CheXpert Paths, or another registered data set's image Paths (its ``path_pattern``; data/site_csv writes
    them): those rows' patient is namespaced ``<data set>/<patient>`` (never equal to a CheXpert ``patientNNNNN``)
    and their folder is the data set's name."""
    parts = frame["Path"].str.extract(PATH_PATTERN)
    for spec in DATASETS.values():
        missed = parts["patient"].isna()
        if spec.path_pattern and missed.any():
            other = frame["Path"][missed].str.extract(spec.path_pattern)
            found = other.index[other["patient"].notna()]
            parts.loc[found, "patient"] = spec.name + "/" + other.loc[found, "patient"]
            parts.loc[found, ["study", "view"]] = other.loc[found, ["study", "view"]]
            parts.loc[found, "folder"] = spec.name
    bad = parts["patient"].isna().to_numpy()
    if bad.any():
        first = frame["Path"].iloc[int(np.argmax(bad))]
        others = [f"{s.name} ({s.path_pattern})" for s in DATASETS.values() if s.path_pattern]
        raise DataError(
            f"{csv_path} {csv_lines(np.flatnonzero(bad))}: Path {first!r} does not match the CheXpert pattern "
            "CheXpert-v1.0[-small]/{train|valid|test}/patientNNNNN/studyN/viewN_{frontal|lateral}.jpg"
            + (f" nor another data set's image layout: {'; '.join(others)}" if others else "")
        )
    dup = frame["Path"].duplicated(keep=False).to_numpy()
    if dup.any():
        first = frame["Path"].iloc[int(np.argmax(dup))]
        raise DataError(
            f"{csv_path} {csv_lines(np.flatnonzero(dup))}: duplicate Path {first!r}; expected each image once"
        )
    return parts


def _parse_labels(column: pd.Series, name: str, csv_path: Path) -> np.ndarray:
    text = column.str.strip()
    values = pd.to_numeric(text.where(text != ""), errors="coerce").to_numpy(dtype=float)
    bad = (text != "").to_numpy() & ~np.isin(values, (1.0, 0.0, -1.0))
    if bad.any():
        first = column.iloc[int(np.argmax(bad))]
        raise DataError(
            f"{csv_path} {csv_lines(np.flatnonzero(bad))}: column {name!r} has value {first!r}; expected {ALLOWED_LABELS}"
        )
    return values


def _parse_age(column: pd.Series, csv_path: Path) -> np.ndarray:
    text = column.str.strip()
    values = pd.to_numeric(text.where(text != ""), errors="coerce").to_numpy(dtype=float)
    bad = (text != "").to_numpy() & (np.isnan(values) | (values < 0) | (values > 130))
    if bad.any():
        first = column.iloc[int(np.argmax(bad))]
        raise DataError(
            f"{csv_path} {csv_lines(np.flatnonzero(bad))}: column 'Age' has value {first!r}; expected a number of years 0-130 or blank"
        )
    return values


def _check_views(frame: pd.DataFrame, csv_path: Path) -> None:
    bad = ~frame["Frontal/Lateral"].isin(("Frontal", "Lateral")).to_numpy()
    if bad.any():
        first = frame["Frontal/Lateral"].iloc[int(np.argmax(bad))]
        raise DataError(
            f"{csv_path} {csv_lines(np.flatnonzero(bad))}: column 'Frontal/Lateral' has value {first!r}; expected Frontal or Lateral"
        )


def _check_files_exist(frame: pd.DataFrame, csv_path: Path) -> None:
    missing = np.array([not os.path.isfile(p) for p in frame["image"]])
    if missing.any():
        first = frame["image"].iloc[int(np.argmax(missing))]
        raise DataError(
            f"{csv_path} {csv_lines(np.flatnonzero(missing))}: image {first} does not exist; "
            "expected the images beside the CSV (or pass root= / check_files=False)"
        )


register_dataset(
    DatasetSpec(
        name="chexpert",
        read=read_chexpert_release,
        description="CheXpert v1.0 (Stanford; the small or full release): train.csv and valid.csv, report-labeler labels",
        splits=SPLITS,
        default_root="data",
        eval_split="valid",  # radiologist-labelled (the phantom: the truth)
    )
)
