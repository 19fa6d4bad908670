"""Patients' sex and age for data sets whose image CSVs do not hold them (MIMIC-CXR-JPG).

CheXpert's CSVs carry ``Sex`` and ``Age`` per image. MIMIC-CXR-JPG does not: its patients' sex and age
are in MIMIC-IV's ``hosp/patients.csv.gz`` (columns ``subject_id``, ``gender`` "M" / "F",
``anchor_age``, ``anchor_year``, ``anchor_year_group``, ``dod``; credentialed access like the images;
columns as documented on MIT-LCP's MIMIC-IV page for ``hosp/patients``, where an ``anchor_age`` over
89 is written as 91, so the oldest age band is "90 and over" in effect).
``add_demographics`` joins it by ``subject_id`` and adds ``Sex`` ("Male" / "Female", CheXpert's
spelling) and ``Age`` (``anchor_age``: the age in the anchor year, not at the study — an
approximation of up to the years between the two; the phantom's second site writes the age at the first study).
A patient missing from the file gets a blank Sex and a NaN Age (counted in ``attrs``), not an error.
"""

from pathlib import Path

import numpy as np
import pandas as pd

from chexutils.core.errors import DataError, csv_lines

PATIENTS_COLUMNS = ("subject_id", "gender", "anchor_age")  # the columns used; the file has more
SEX = {"M": "Male", "F": "Female"}


def read_patients(path) -> pd.DataFrame:
    """``subject_id`` (int) -> ``Sex``, ``Age``; one DataError per problem (file, line, expectation)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"{path}: file does not exist; expected MIMIC-IV's hosp/patients.csv.gz (subject_id, gender, anchor_age)"
        )
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, OSError, EOFError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not a readable CSV ({err}); expected subject_id, gender, anchor_age") from None
    missing = [c for c in PATIENTS_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(
            f"{path} line 1: missing column(s) {', '.join(missing)}; expected {', '.join(PATIENTS_COLUMNS)}"
        )
    ids = frame["subject_id"].str.strip()
    ages = pd.to_numeric(frame["anchor_age"].str.strip(), errors="coerce")
    gender = frame["gender"].str.strip().str.upper()
    for bad, what, column in (
        (~ids.str.isdigit(), "an integer subject_id", "subject_id"),
        (~gender.isin(SEX), "gender M or F", "gender"),
        (ages.isna() | (ages < 0) | (ages > 120), "anchor_age in years (0-120)", "anchor_age"),
        (ids.duplicated(keep=False), "each subject_id once", "subject_id"),
    ):
        if bad.any():
            rows = np.flatnonzero(bad.to_numpy())
            raise DataError(
                f"{path} {csv_lines(rows)}: column {column!r} has value {frame[column].iloc[rows[0]]!r}; expected {what}"
            )
    return pd.DataFrame({"Sex": gender.map(SEX).to_numpy(), "Age": ages.to_numpy(float)}, index=ids.astype("int64"))


def add_demographics(frame: pd.DataFrame, path) -> pd.DataFrame:
    """``frame`` (with ``subject_id``) plus ``Sex`` and ``Age`` from the patients file at ``path``."""
    patients = read_patients(path)
    out = frame.copy()
    found = patients.reindex(out["subject_id"].to_numpy())
    out["Sex"] = found["Sex"].fillna("").to_numpy()
    out["Age"] = found["Age"].to_numpy()
    out.attrs["patients_without_demographics"] = int(out.loc[found["Age"].isna().to_numpy(), "subject_id"].nunique())
    return out
