"""Patient-level re-split of a CheXpert frame into train / select / held-out.

``train`` is trained on, ``select`` chooses each run's best epoch, ``held_out`` is never touched by
training and serves the secondary comparison on report labels (names from ``chexutils.core.rundir``).

All images of a patient land in one split (a study-level split leaks patients). Patients are
assigned by iterative stratification (Sechidis et al., 2011): patients carrying the rarest
positive labels are placed first, each into the split that most lacks that label, so label
prevalences stay close across splits.
"""

from pathlib import Path

import numpy as np
import pandas as pd

from chexutils.core.errors import DataError
from chexutils.core.labels import OBSERVATIONS
from chexutils.core.rundir import HELD_OUT, SELECT, TRAIN
from chexutils.data.chexpert import write_chexpert_csv

SPLITS = (TRAIN, SELECT, HELD_OUT)


def patient_split(frame: pd.DataFrame, fractions=(0.8, 0.1, 0.1), seed: int = 0) -> dict[str, pd.DataFrame]:
    """Split ``frame`` (from `read_chexpert`) by patient into ``{"train", "select", "held_out"}`` frames."""
    fractions = np.asarray(fractions, float)
    if fractions.shape != (3,) or (fractions < 0).any() or not np.isclose(fractions.sum(), 1.0):
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {tuple(fractions)}")
    _check_one_folder_per_patient(frame)
    patients, inverse = np.unique(frame["patient"].to_numpy(), return_inverse=True)
    positives = (frame[list(OBSERVATIONS)].to_numpy() == 1.0).astype(float)
    weights = np.zeros((len(patients), len(OBSERVATIONS) + 1))
    np.add.at(weights, inverse, np.column_stack([positives, np.ones(len(frame))]))  # last column: images
    assignment = _stratify(weights, fractions, np.random.default_rng(seed))
    split_of_row = assignment[inverse]
    out = {name: frame[split_of_row == k].reset_index(drop=True) for k, name in enumerate(SPLITS)}
    _check_no_leak(out)
    return out


def _stratify(weights: np.ndarray, fractions: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Greedy iterative stratification; returns the split index of each patient.

    Patients are taken rarest-label first; each goes to the split with the largest summed
    *relative* shortfall over the patient's positive labels and its image count.
    """
    n_patients = len(weights)
    wanted = fractions[:, None] * weights.sum(axis=0)[None, :]
    have = np.zeros_like(wanted)
    label_totals = weights[:, :-1].sum(axis=0)
    rarity = np.where(weights[:, :-1] > 0, label_totals[None, :], np.inf).min(axis=1)
    order = np.lexsort((rng.random(n_patients), rarity))
    open_splits = fractions > 0
    assignment = np.empty(n_patients, int)
    for p in order:
        carried = weights[p] > 0
        shortfall = (wanted[:, carried] - have[:, carried]) / np.maximum(wanted[:, carried], 1e-9)
        score = np.where(open_splits, shortfall.sum(axis=1), -np.inf)
        best = np.flatnonzero(np.isclose(score, score.max()))
        choice = best[0] if len(best) == 1 else rng.choice(best)
        assignment[p] = choice
        have[choice] += weights[p]
    return assignment


def _check_one_folder_per_patient(frame: pd.DataFrame) -> None:
    folders = frame.groupby("patient")["folder"].nunique()
    twice = folders[folders > 1]
    if len(twice):
        patient = twice.index[0]
        rows = frame[frame["patient"] == patient]
        lines = ", ".join(str(n) for n in rows["line"].head(6)) if "line" in rows else "?"
        raise DataError(
            f"patient {patient} appears under several source folders "
            f"({', '.join(sorted(rows['folder'].unique()))}; CSV lines {lines}); "
            "expected each patient in one folder, else a patient-level split would leak"
        )


def _check_no_leak(splits: dict[str, pd.DataFrame]) -> None:
    seen: dict[str, str] = {}
    for name, part in splits.items():
        for patient in part["patient"].unique():
            if patient in seen:
                raise RuntimeError(f"patient {patient} is in both {seen[patient]} and {name}")
            seen[patient] = name


def split_summary(splits: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Per split: patients, studies, images, patients shared with another split, and positive rate per observation."""
    patient_sets = {name: set(part["patient"]) for name, part in splits.items()}
    rows = {}
    for name, part in splits.items():
        others = set().union(*(s for n, s in patient_sets.items() if n != name))
        row = {
            "patients": part["patient"].nunique(),
            "studies": part["study"].nunique(),
            "images": len(part),
            "shared patients": len(patient_sets[name] & others),
        }
        row.update({obs: (part[obs] == 1.0).mean() if len(part) else np.nan for obs in OBSERVATIONS})
        rows[name] = row
    return pd.DataFrame(rows).T


def write_split(splits: dict[str, pd.DataFrame], out_dir) -> dict[str, Path]:
    """Write ``<part>.csv`` (train, select, held_out) in the CheXpert schema; Paths stay relative to the data root."""
    out_dir = Path(out_dir)
    return {name: write_chexpert_csv(part, out_dir / f"{name}.csv") for name, part in splits.items()}


def prevalence_spread(summary: pd.DataFrame) -> pd.Series:
    """Per observation, the largest minus the smallest positive rate across splits (0 = identical)."""
    rates = summary[list(OBSERVATIONS)].astype(float)
    return (rates.max() - rates.min()).rename("max - min positive rate")
