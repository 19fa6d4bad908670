"""Counts from the real CheXpert-v1.0-small train.csv (223,414 images), used to calibrate the
phantom and to set measured phantom rates beside the real ones.

Source: counts taken from train.csv of CheXpert-v1.0-small (Irvin et al., AAAI 2019,
arXiv 1901.07031); counted from the real file, which cannot be redistributed.
"""

import pandas as pd

TRAIN_IMAGES = 223_414
TRAIN_PATIENTS = 64_540
TRAIN_STUDIES = 187_641

# observation: (positive, negative, uncertain, blank) image counts
LABEL_COUNTS: dict[str, tuple[int, int, int, int]] = {
    "No Finding": (22_381, 0, 0, 201_033),
    "Enlarged Cardiomediastinum": (10_798, 21_638, 12_403, 178_575),
    "Cardiomegaly": (27_000, 11_116, 8_087, 177_211),
    "Lung Opacity": (105_581, 6_599, 5_598, 105_636),
    "Lung Lesion": (9_186, 1_270, 1_488, 211_470),
    "Edema": (52_246, 20_726, 12_984, 137_458),
    "Consolidation": (14_783, 28_097, 27_742, 152_792),
    "Pneumonia": (6_039, 2_799, 18_770, 195_806),
    "Atelectasis": (33_376, 1_328, 33_739, 154_971),
    "Pneumothorax": (19_448, 56_341, 3_145, 144_480),
    "Pleural Effusion": (86_187, 35_396, 11_628, 90_203),
    "Pleural Other": (3_523, 316, 2_653, 216_922),
    "Fracture": (9_040, 2_512, 642, 211_220),
    "Support Devices": (116_001, 6_137, 1_079, 100_197),
}

# studies per patient: count of patients (1..12; the long tail beyond 12 holds the rest)
STUDIES_PER_PATIENT = {
    1: 33_564,
    2: 11_172,
    3: 5_921,
    4: 3_661,
    5: 2_482,
    6: 1_665,
    7: 1_181,
    8: 896,
    9: 696,
    10: 529,
    11: 448,
    12: 345,
}
IMAGES_PER_STUDY = {1: 153_647, 2: 32_215, 3: 1_779}
SEX = {"Male": 132_636, "Female": 90_777, "Unknown": 1}
AGE_MEAN, AGE_SD = 60.4, 17.8
FRONTAL, LATERAL = 191_027, 32_387
AP_PA = {"AP": 161_590, "PA": 29_420, "LL": 16, "RL": 1}


def label_rates() -> pd.DataFrame:
    """Real per-observation rates of positive / negative / uncertain / blank (fractions of images)."""
    table = pd.DataFrame.from_dict(LABEL_COUNTS, orient="index", columns=["positive", "negative", "uncertain", "blank"])
    return table / TRAIN_IMAGES
