"""Tables that describe a CheXpert frame: label rates, views, structure, demographics, co-occurrence."""

import numpy as np
import pandas as pd

from chexutils.core.labels import OBSERVATIONS
from chexutils.data import real_stats

LABEL_KINDS = {"positive": 1.0, "negative": 0.0, "uncertain": -1.0}


def label_counts(frame: pd.DataFrame) -> pd.DataFrame:
    """Images per observation that are positive / negative / uncertain / blank."""
    values = frame[list(OBSERVATIONS)]
    table = pd.DataFrame({kind: (values == v).sum() for kind, v in LABEL_KINDS.items()})
    table["blank"] = values.isna().sum()
    return table


def label_rates(frame: pd.DataFrame) -> pd.DataFrame:
    """Label counts as fractions of images, with the uncertainty rate among mentions."""
    counts = label_counts(frame)
    rates = counts / len(frame)
    mentioned = counts[["positive", "negative", "uncertain"]].sum(axis=1)
    rates["uncertain of mentioned"] = counts["uncertain"] / mentioned.replace(0, np.nan)
    return rates


def rates_vs_real(frame: pd.DataFrame) -> pd.DataFrame:
    """This frame's label rates beside the real train.csv's (columns: kind x {this, real})."""
    mine = label_rates(frame)[["positive", "negative", "uncertain", "blank"]]
    real = real_stats.label_rates()
    return (
        pd.concat({"this": mine, "real": real}, axis=1)
        .swaplevel(axis=1)
        .sort_index(axis=1, level=0, sort_remaining=False)
    )


def view_counts(frame: pd.DataFrame) -> pd.DataFrame:
    """Images per view kind (Frontal/Lateral) and projection (AP/PA, blank for laterals)."""
    projection = frame["AP/PA"].replace("", "(blank)").fillna("(blank)")
    return pd.crosstab(frame["Frontal/Lateral"], projection, margins=True, margins_name="all")


def structure(frame: pd.DataFrame) -> dict:
    """Counts of patients, studies, images; distributions of studies per patient and images per study."""
    studies_per_patient = frame.groupby("patient")["study"].nunique().value_counts().sort_index()
    images_per_study = frame.groupby("study").size().value_counts().sort_index()
    return {
        "patients": int(frame["patient"].nunique()),
        "studies": int(frame["study"].nunique()),
        "images": int(len(frame)),
        "studies_per_patient": studies_per_patient,
        "images_per_study": images_per_study,
    }


def demographics(frame: pd.DataFrame) -> pd.DataFrame:
    """Sex and age per patient (first study's age) as display text, the real train.csv beside.

    The real release counts sex per image (223,414 images), so both columns show a share of
    their own unit, named in the text, never a patient count beside an image share."""
    first = frame.sort_values("line").drop_duplicates("patient")
    sex = first["Sex"].value_counts()
    real_images = sum(real_stats.SEX.values())
    rows, real = {}, {}
    for s in ("Male", "Female", "Unknown"):
        rows[s] = f"{int(sex.get(s, 0)):,} patients ({100 * sex.get(s, 0) / len(first):.1f}%)"
        real[s] = f"{real_stats.SEX[s]:,} images ({100 * real_stats.SEX[s] / real_images:.1f}%)"
    age = first["Age"]
    rows["age mean (SD)"] = f"{age.mean():.1f} ({age.std():.1f})"
    real["age mean (SD)"] = f"{real_stats.AGE_MEAN:.1f} ({real_stats.AGE_SD:.1f})"
    rows["age range"], real["age range"] = f"{int(age.min())}–{int(age.max())}", "0–90"
    return pd.DataFrame({"this data set": pd.Series(rows), "real train.csv": pd.Series(real)})


def cooccurrence(frame: pd.DataFrame) -> pd.DataFrame:
    """P(column positive | row positive) over studies, for the co-occurrence heat map."""
    studies = frame.drop_duplicates("study")
    pos = (studies[list(OBSERVATIONS)] == 1.0).astype(float)
    joint = pos.T @ pos
    counts = np.diag(joint).copy()
    with np.errstate(invalid="ignore", divide="ignore"):
        return joint.div(np.where(counts > 0, counts, np.nan), axis=0)


def summary(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per named frame: patients, studies, images, frontal share, label-kind shares."""
    rows = {}
    for name, frame in frames.items():
        values = frame[list(OBSERVATIONS)]
        rows[name] = {
            "patients": frame["patient"].nunique(),
            "studies": frame["study"].nunique(),
            "images": len(frame),
            "frontal": float(frame["frontal"].mean()),
            "positive": float((values == 1).to_numpy().mean()),
            "uncertain": float((values == -1).to_numpy().mean()),
            "blank": float(values.isna().to_numpy().mean()),
        }
    return pd.DataFrame(rows).T


def sample_images(frame: pd.DataFrame, per_finding: int = 3, seed: int = 0) -> pd.DataFrame:
    """A few frontal images that are positive for each observation (for the sample-image grid)."""
    rng = np.random.default_rng(seed)
    frontal = frame[frame["frontal"]]
    picks = []
    for obs in OBSERVATIONS:
        pool = frontal[frontal[obs] == 1.0]
        take = pool.iloc[rng.permutation(len(pool))[:per_finding]]
        picks.append(take.assign(finding=obs))
    return pd.concat(picks, ignore_index=True)
