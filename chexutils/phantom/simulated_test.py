"""The phantom's official test set, in the released layout and formats, read by simulated radiologists.

Writes under the phantom's data folder (as ``chexutils.data.test_set_files`` expects the real files):

    cheXpert-test-set-labels/groundtruth.csv                         majority of the 5 reference readers
    cheXpert-test-set-labels/radiologists/groundtruth/bc{1,2,3,5,7}_gt.csv
    cheXpert-test-set-labels/radiologists/benchmark_radiologists/bc{4,6,8}.csv
    cheXpert-test-set-labels/phantom_test_truth.{json,csv}           sidecar: reader parameters, true findings
    CheXpert/test_labels.csv, CheXpert/test/patientN/study1/viewK_*.jpg   the images (CheXlocalize layout)

Each simulated reader reads each observation positive with a probability that depends on the study's
latent category: high for clear findings, lower for faint ones (missed), raised for mimics (false
alarms), low for nothing — so readers are worst exactly where the report labels are uncertain.
Where mimics are drawn as the faint sign itself (the default), a reader sees the same film either
way, so it reads a mimic with its faint-sign probability.
Reads are independent between readers given the category. No Finding is read positive when the
reader reads no pathology. The sidecar keeps every probability and the true findings.
"""

from pathlib import Path

import numpy as np
import pandas as pd

from chexutils.core.io import write_json, write_table
from chexutils.core.labels import OBSERVATIONS, PATHOLOGIES
from chexutils.data.test_set_files import (
    BENCHMARK_READERS,
    CHEXLOCALIZE,
    GROUNDTRUTH,
    LABELS_REPO,
    REFERENCE_READERS,
    TEST_IMAGES_CSV,
    reader_file,
)
from chexutils.phantom import label_model as lm
from chexutils.phantom.layout import image_rows, sample_layout
from chexutils.phantom.sidecar import TEST_TRUTH_CSV, TEST_TRUTH_JSON

SEED_SALT = 65_240  # the test set draws from its own stream, so adding it leaves train/valid unchanged
IMAGE_SEED_OFFSET = 10_000_000  # per-image render seeds distinct from train/valid images
# P(read positive | category), each reader and observation drawn uniformly from these ranges.
READ_RANGES = {"clear": (0.85, 0.97), "faint": (0.35, 0.65), "mimic": (0.20, 0.45), "none": (0.01, 0.07)}
# The released radiologists' files put Lung Lesion before Lung Opacity; the phantom writes them the same way.
READER_COLUMN_ORDER = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Lesion",
    "Lung Opacity",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)


def reader_parameters(readers, rng: np.random.Generator, mimics: str) -> dict:
    """reader -> observation -> category -> P(read positive); No Finding is derived, not drawn.

    With ``mimics="faint-sign"`` a mimic is the faint sign's film, so it gets the faint probability.
    """
    params = {
        r: {o: {c: float(rng.uniform(*READ_RANGES[c])) for c in lm.CATEGORIES} for o in OBSERVATIONS[1:]}
        for r in readers
    }
    if mimics == "faint-sign":
        for per_obs in params.values():
            for p in per_obs.values():
                p["mimic"] = p["faint"]
    return params


def simulate_reads(cats: dict, params: dict, rng: np.random.Generator) -> pd.DataFrame:
    """One reader's 0/1 reads per study and observation, from the latent categories."""
    n = len(next(iter(cats.values())))
    reads = {}
    for obs in OBSERVATIONS[1:]:
        p = np.array([params[obs][c] for c in lm.CATEGORIES])[cats[obs]]
        reads[obs] = (rng.random(n) < p).astype(int)
    any_pathology = np.any([reads[o] for o in PATHOLOGIES], axis=0)
    reads["No Finding"] = (~any_pathology).astype(int)
    return pd.DataFrame(reads)[list(OBSERVATIONS)]


def write_test_set(
    out, first_patient: int, n_patients: int, models: dict, size, seed: int, render_all, render_tasks, mimics: str
) -> Path:
    """Render and write the phantom test set under ``out``; returns the labels folder.

    ``render_tasks`` / ``render_all`` are the phantom generator's own image helpers, so test images
    are drawn exactly like train and valid images; ``mimics`` is how ``render_all`` draws a mimic.
    """
    out = Path(out)
    rng = np.random.default_rng([seed, SEED_SALT])
    studies, images = sample_layout(first_patient, n_patients, "test", rng, one_study=True)
    cats, extra = lm.sample_truth(len(studies), models, rng)
    readers = REFERENCE_READERS + BENCHMARK_READERS
    params = reader_parameters(readers, rng, mimics)
    reads = {r: simulate_reads(cats, params[r], rng) for r in readers}
    majority = (sum(reads[r] for r in REFERENCE_READERS) >= 3).astype(int)

    rows = image_rows(studies, images, majority)  # CheXlocalize: Path relative to CheXpert/
    render_all(render_tasks(rows, images, cats, extra, out / CHEXLOCALIZE, size, seed, IMAGE_SEED_OFFSET))

    labels_dir = out / LABELS_REPO
    study_ids = "CheXpert-v1.0/test/" + studies["study"]
    for r in readers:
        table = pd.concat([study_ids.rename("Study"), reads[r]], axis=1)[["Study", *READER_COLUMN_ORDER]]
        write_table(table, reader_file(labels_dir, r), index=False)
    truth = lm.truth_labels(cats).astype(int)
    sidecar = pd.DataFrame({"study": studies["study"]})
    for obs in OBSERVATIONS:
        sidecar[f"{obs}|truth"] = truth[obs]
        if obs in cats:
            sidecar[f"{obs}|category"] = np.array(lm.CATEGORIES)[cats[obs]]
            sidecar[f"{obs}|severity"] = np.round(extra["severity"][obs], 4)
    write_table(sidecar, labels_dir / TEST_TRUTH_CSV, index=False)
    write_json(
        labels_dir / TEST_TRUTH_JSON,
        {
            "readers": {"reference": list(REFERENCE_READERS), "benchmark": list(BENCHMARK_READERS)},
            "p_read_positive": params,
            "read_ranges": READ_RANGES,
            "mimics": mimics,
            "patients": n_patients,
            "first_patient": first_patient,
            "truth_csv": TEST_TRUTH_CSV,
            "doc": "p_read_positive[reader][observation][category] = P(the reader reads it positive | latent category); "
            "readers are independent given the category (a mimic drawn as the faint sign is read like one, "
            "mimics 'faint-sign'); No Finding = no pathology read positive. "
            "groundtruth.csv = at least 3 of the 5 reference readers positive. phantom_test_truth.csv holds "
            "per study the true finding (0/1), category and severity per observation.",
        },
    )
    write_table(rows, out / CHEXLOCALIZE / TEST_IMAGES_CSV, index=False)
    write_table(pd.concat([study_ids.rename("Study"), majority], axis=1), labels_dir / GROUNDTRUTH, index=False)
    return labels_dir
