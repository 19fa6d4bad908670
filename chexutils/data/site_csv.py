"""CheXpert-schema training CSVs from any registered data set's split, alone or pooled across sites (issue 24).

The training path (``training/train.py``, notebook 03, the runner) reads CheXpert CSVs, resolving each
``Path`` against its ``data_dir`` (the folder holding ``CheXpert-v1.0-small/``). To train on a second
site, or on two sites pooled, this module writes the same schema — exactly CheXpert's columns: ``Path``,
``Sex``, ``Age``, ``Frontal/Lateral``, ``AP/PA`` and the 14 observations as 1.0 / 0.0 / -1.0 / blank —
from a data set's split, and notebook 03 trains on it unchanged through ``train_csv`` / ``select_csv``.

- **Paths**: relative to ``data_dir`` when the image lies under it (the default layout
  ``data/CheXpert-v1.0-small`` + ``data/mimic-cxr-jpg``, and the phantom's), otherwise absolute. The CheXpert
  reader accepts a registered data set's own image layout (``DatasetSpec.path_pattern``) beside CheXpert's,
  so its checks (pattern, duplicates, labels, views, files present) stay meaningful; the image cache keys on
  the resolved absolute path and each file's size and mtime (``data/cache``), whichever form the CSV holds.
- **Patients** are namespaced by data set: a CheXpert ``patientNNNNN`` keeps its name, another data set's
  patient is ``<data set>/<its id>`` (MIMIC-CXR-JPG subject 1: ``mimic-cxr-jpg/p1``), so two sites' ids never
  collide — the same names the CheXpert reader gives when it reads the CSV back.
- **Pooled**: ``write_training_csvs`` refuses a patient found in two of the parts it writes (a site's
  training and selection splits, or two sites), naming the patient and both parts, and checks that every
  written CSV reads back with the patients it was given.

Images with a view that is neither frontal nor lateral (MIMIC-CXR-JPG has a few, e.g. blank or ``LAO``)
cannot be written in the schema's ``Frontal/Lateral`` column: they are left out and counted in
``attrs["dropped_other_view"]``.

    parts = {"site2_train": site_rows("mimic-cxr-jpg", root, "train", data_dir),
             "site2_select": site_rows("mimic-cxr-jpg", root, "validate", data_dir)}
    write_training_csvs(parts, output_dir / "split", data_dir)
"""

import os
from pathlib import Path

import numpy as np
import pandas as pd

from chexutils.core.errors import DataError
from chexutils.core.labels import OBSERVATIONS
from chexutils.core.paths import resolve
from chexutils.data.chexpert import read_chexpert, write_chexpert_csv
from chexutils.data.datasets import get_dataset, read_dataset
from chexutils.data.demographics import add_demographics

PATIENTS_BESIDE = "patients.csv.gz"  # sex and age beside a release (the phantom's second site writes it there)
LATERAL_VIEWS = ("LATERAL", "LL", "RL")  # view values written as Lateral when a frame has no Frontal/Lateral column


def site_patient(dataset: str, patient) -> str:
    """The namespaced patient id: CheXpert's own (``patientNNNNN``), else ``<data set>/<patient>``."""
    return str(patient) if not get_dataset(dataset).path_pattern else f"{dataset}/{patient}"


def schema_rows(frame: pd.DataFrame, dataset: str, data_dir) -> pd.DataFrame:
    """``frame`` (a reader's: ``image``, ``patient``, ``frontal``, ``view``, the 14 observations; Sex / Age /
    ``Frontal/Lateral`` / ``AP/PA`` when it has them) as CheXpert-schema rows plus ``patient`` (namespaced)."""
    if frame.empty:
        raise DataError(f"{dataset}: no images to write; expected at least one row")
    base = str(Path(data_dir).resolve()) + os.sep
    images = frame["image"].astype(str)
    under = images.str.startswith(base)
    out = pd.DataFrame({"Path": images.where(~under, images.str.slice(len(base)))})
    out["Sex"] = frame["Sex"].fillna("").to_numpy() if "Sex" in frame else ""
    out["Age"] = pd.to_numeric(frame["Age"], errors="coerce").to_numpy() if "Age" in frame else np.nan
    view = frame["view"].fillna("").astype(str).str.strip().str.upper()
    if "Frontal/Lateral" in frame:
        out["Frontal/Lateral"] = frame["Frontal/Lateral"].to_numpy()
        out["AP/PA"] = frame["AP/PA"].fillna("").to_numpy()
    else:
        out["Frontal/Lateral"] = np.where(
            frame["frontal"], "Frontal", np.where(view.isin(LATERAL_VIEWS), "Lateral", "")
        )
        out["AP/PA"] = np.where(frame["frontal"], view, "")
    for name in OBSERVATIONS:
        out[name] = frame[name].to_numpy(dtype=float)
    out["patient"] = [site_patient(dataset, p) for p in frame["patient"]]
    kept = out["Frontal/Lateral"].isin(("Frontal", "Lateral")).to_numpy()
    out = out[kept].reset_index(drop=True)
    out.attrs["dropped_other_view"] = int((~kept).sum())
    return out


def site_rows(dataset: str, root=None, split=None, data_dir="data", views=None, patients_csv=None) -> pd.DataFrame:
    """A registered data set's split (``read_dataset``) as CheXpert-schema rows. ``patients_csv`` (MIMIC-IV's
    patients file; default: ``patients.csv.gz`` beside the release, if there) fills Sex and Age where the data
    set's files lack them."""
    frame = read_dataset(dataset, root, split=split, views=views)
    beside = resolve(root if root is not None else get_dataset(dataset).default_root) / PATIENTS_BESIDE
    patients_csv = patients_csv or (beside if beside.is_file() else None)
    if patients_csv is not None and "subject_id" in frame:
        frame = add_demographics(frame, patients_csv)
    return schema_rows(frame, dataset, data_dir)


def check_disjoint(parts: dict) -> None:
    """A DataError when a (namespaced) patient is in two of the named parts."""
    seen: dict = {}
    for name, rows in parts.items():
        for patient in pd.unique(rows["patient"]):
            if seen.setdefault(patient, name) != name:
                raise DataError(
                    f"patient {patient!r} is in {seen[patient]} and in {name}; expected each patient in one "
                    "split only (patients never cross splits, at one site or pooled)"
                )


def pool(*frames: pd.DataFrame) -> pd.DataFrame:
    """Rows of several sites as one part; the same image twice is a DataError."""
    rows = pd.concat(frames, ignore_index=True)
    twice = rows["Path"].duplicated()
    if twice.any():
        raise DataError(f"image {rows['Path'][twice].iloc[0]!r} is pooled twice; expected each image once")
    rows.attrs["dropped_other_view"] = sum(f.attrs.get("dropped_other_view", 0) for f in frames)
    return rows


def write_training_csvs(parts: dict, out_dir, data_dir, check_files: bool = True) -> dict[str, Path]:
    """Write ``<out_dir>/<name>.csv`` per part (atomically) once no patient is in two parts; each CSV is read
    back with the CheXpert reader against ``data_dir`` (as training reads it) and must give the same patients."""
    check_disjoint(parts)
    written = {}
    for name, rows in parts.items():
        path = write_chexpert_csv(rows, Path(out_dir) / f"{name}.csv")
        back = read_chexpert(path, root=data_dir, check_files=check_files)
        differs = back["patient"].to_numpy() != rows["patient"].to_numpy()
        if differs.any():
            i = int(np.argmax(differs))
            raise DataError(
                f"{path} line {i + 2}: Path {rows['Path'].iloc[i]!r} reads back as patient {back['patient'].iloc[i]!r}, "
                f"expected {rows['patient'].iloc[i]!r} (its data set's path_pattern does not describe its images?)"
            )
        written[name] = path
    return written


def selection_split(dataset: str) -> str:
    """The split that chooses a run's best epoch: the data set's split that is neither its training nor its
    evaluation split (MIMIC-CXR-JPG: ``validate``)."""
    spec = get_dataset(dataset)
    rest = [s for s in spec.splits if s not in (spec.train_split, spec.evaluation_split)]
    if not rest:
        raise DataError(
            f"{dataset}: splits {', '.join(spec.splits)} leave none between training and evaluation; expected one "
            "to choose the best epoch on (re-split its training patients with data/split.patient_split)"
        )
    return rest[0]


def write_site_split(
    dataset: str, root, site1: dict, out_dir, data_dir, views=None, patients_csv=None, name: str = "site2"
) -> tuple[dict[str, Path], pd.DataFrame]:
    """Notebook 02's second-site step: ``<name>_train`` / ``_select`` / ``_test`` (the data set's training,
    selection and evaluation splits) and ``pooled_train`` / ``pooled_select`` (site 1's ``train`` / ``select``
    frames from ``data/split`` pooled with site 2's) as CSVs under ``out_dir``; returns the paths and `summary`.
    No patient is in two splits of one site, nor in a pooled split and site 2's test split."""
    spec = get_dataset(dataset)
    splits = {"train": spec.train_split, "select": selection_split(dataset), "test": spec.evaluation_split}
    site = {part: site_rows(dataset, root, split, data_dir, views, patients_csv) for part, split in splits.items()}
    first = {part: schema_rows(site1[part], "chexpert", data_dir) for part in ("train", "select")}
    pooled = {f"pooled_{part}": pool(first[part], site[part]) for part in ("train", "select")}
    check_disjoint({**pooled, f"{name}_test": site["test"]})
    ours = {f"{name}_{part}": rows for part, rows in site.items()}
    written = write_training_csvs(ours, out_dir, data_dir)
    written.update(write_training_csvs(pooled, out_dir, data_dir))
    return written, summary({**ours, **pooled})


def summary(parts: dict) -> pd.DataFrame:
    """Per part: patients, images, images per site (``chexpert`` or the namespace) and positive rate per observation."""
    rows = {}
    for name, part in parts.items():
        site = part["patient"].str.rsplit("/", n=1).str[0].where(part["patient"].str.contains("/"), "chexpert")
        row = {"patients": part["patient"].nunique(), "images": len(part)}
        row.update({f"images {s}": int(n) for s, n in site.value_counts().sort_index().items()})
        rows[name] = row
    counts = pd.DataFrame.from_dict(rows, orient="index").fillna(0).astype(int)
    rates = pd.DataFrame({name: (part[list(OBSERVATIONS)] == 1.0).mean() for name, part in parts.items()}).T
    return counts.join(rates)
