"""Who, when and which views: patients, studies and images of the phantom, shaped like the real train.csv."""

import numpy as np
import pandas as pd

from chexutils.core.labels import OBSERVATIONS
from chexutils.data import real_stats
from chexutils.data.chexpert import CSV_COLUMNS

MAX_STUDIES = 25  # the real tail beyond 12 studies per patient is spread evenly over 13..MAX_STUDIES


def studies_per_patient_probs() -> np.ndarray:
    """P(k studies) for k = 1..MAX_STUDIES, from the real counts plus an even tail."""
    counts = np.zeros(MAX_STUDIES)
    for k, c in real_stats.STUDIES_PER_PATIENT.items():
        counts[k - 1] = c
    tail = real_stats.TRAIN_PATIENTS - counts.sum()
    counts[12:] = tail / (MAX_STUDIES - 12)
    return counts / counts.sum()


def sample_layout(
    first_patient: int, n_patients: int, folder: str, rng: np.random.Generator, one_study: bool = False
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Studies (one row each) and images (one row each, ``study_row`` pointing into studies).

    ``one_study`` gives every patient a single study, as in the real valid.csv.
    """
    n_studies = (
        np.ones(n_patients, int)
        if one_study
        else rng.choice(np.arange(1, MAX_STUDIES + 1), size=n_patients, p=studies_per_patient_probs())
    )
    male = rng.random(n_patients) < real_stats.SEX["Male"] / (real_stats.SEX["Male"] + real_stats.SEX["Female"])
    age0 = np.clip(rng.normal(real_stats.AGE_MEAN, real_stats.AGE_SD, n_patients), 18, 88)
    patient_idx = np.repeat(np.arange(n_patients), n_studies)
    study_num = np.concatenate([np.arange(1, k + 1) for k in n_studies])
    ages = np.clip(np.round(age0[patient_idx] + (study_num - 1) * rng.uniform(0, 1.5, len(study_num))), 18, 90)
    studies = pd.DataFrame(
        {
            "patient": [f"patient{first_patient + i:05d}" for i in patient_idx],
            "study_num": study_num,
            "folder": folder,
            "Sex": np.where(male[patient_idx], "Male", "Female"),
            "Age": ages.astype(int),
        }
    )
    studies["study"] = studies["patient"] + "/study" + studies["study_num"].astype(str)
    images = _sample_views(studies, rng)
    return studies, images


def _sample_views(studies: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """1-3 views per study; view1 frontal, a later view usually lateral; AP/PA mix of the real frontals."""
    per_study = np.array(list(real_stats.IMAGES_PER_STUDY.values()), float)
    n_views = rng.choice([1, 2, 3], size=len(studies), p=per_study / per_study.sum())
    rows = np.repeat(np.arange(len(studies)), n_views)
    view_num = np.concatenate([np.arange(1, k + 1) for k in n_views])
    frontal = np.ones(len(rows), bool)
    later = view_num > 1
    frontal[later] = rng.random(later.sum()) < 0.08
    # a study's third view is frontal if its second was already lateral, mostly
    third = np.flatnonzero(view_num == 3)
    frontal[third] = ~frontal[third - 1] | (rng.random(len(third)) < 0.1)
    ap_share = real_stats.AP_PA["AP"] / (real_stats.AP_PA["AP"] + real_stats.AP_PA["PA"])
    ap_pa = np.where(frontal, np.where(rng.random(len(rows)) < ap_share, "AP", "PA"), "")
    return pd.DataFrame({"study_row": rows, "view_num": view_num, "frontal": frontal, "AP/PA": ap_pa})


def image_rows(studies: pd.DataFrame, images: pd.DataFrame, labels: pd.DataFrame, prefix: str = "") -> pd.DataFrame:
    """One CSV row per image in the CheXpert schema, labels copied from its study (its report, or the
    readers' majority for the test set). ``Path`` = ``prefix`` + folder/patient/study/view file."""
    st = studies.iloc[images["study_row"]].reset_index(drop=True)
    lab = labels.iloc[images["study_row"]].reset_index(drop=True)
    kind = np.where(images["frontal"], "frontal", "lateral")
    view = "/view" + images["view_num"].astype(str) + "_" + kind + ".jpg"
    rows = pd.DataFrame(
        {
            "Path": prefix + st["folder"] + "/" + st["study"] + view,
            "Sex": st["Sex"],
            "Age": st["Age"],
            "Frontal/Lateral": np.where(images["frontal"], "Frontal", "Lateral"),
            "AP/PA": images["AP/PA"],
        }
    )
    return pd.concat([rows, lab[list(OBSERVATIONS)]], axis=1)[list(CSV_COLUMNS)]
