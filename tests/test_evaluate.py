"""Evaluation resamples patients, not studies: its CIs are recomputed here from the prediction files."""

import json

import numpy as np
import pandas as pd

from chexutils.core.labels import OBSERVATIONS
from chexutils.evaluation.evaluate import evaluate_set
from chexutils.scoring.aggregate import aggregate_studies
from chexutils.scoring.metrics import bootstrap_auroc
from chexutils.scoring.predict import write_predictions


def patient_frame(patients=60, studies=4, seed=0):
    """Patients with several single-image studies whose labels and scores are alike within a patient."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(patients):
        base = rng.random(len(OBSERVATIONS)) < 0.4
        for s in range(studies):
            study = f"patient{p:05d}/study{s + 1}"
            rows.append(
                {
                    "patient": f"patient{p:05d}",
                    "study": study,
                    "frontal": True,
                    "line": len(rows) + 2,
                    "Path": f"CheXpert-v1.0-small/train/{study}/view1_frontal.jpg",
                    **{o: float(b) for o, b in zip(OBSERVATIONS, base)},
                }
            )
    frame = pd.DataFrame(rows)
    labels = frame[list(OBSERVATIONS)].to_numpy()
    patient_effect = np.repeat(rng.normal(0, 1, (patients, len(OBSERVATIONS))), studies, axis=0)
    return frame, labels + patient_effect + rng.normal(0, 0.3, labels.shape)


def test_evaluation_cis_resample_patients(tmp_path):
    frame, scores = patient_frame()
    write_predictions(frame, scores, tmp_path / "predictions_held_out.csv")
    (tmp_path / "config.json").write_text("{}")
    _, table, summary = evaluate_set(tmp_path, frame, "held_out", n_resamples=300, seed=4, predict=False)
    assert summary["resampled"] == "patients"
    labels, study_scores = aggregate_studies(frame, scores)
    groups = frame.drop_duplicates("study").set_index("study")["patient"]
    by_patient = bootstrap_auroc(labels, study_scores, 300, 4, groups=groups)
    by_study = bootstrap_auroc(labels, study_scores, 300, 4)
    written = json.loads((tmp_path / "metrics_held_out.json").read_text())["observations"]
    for obs in ("Edema", "Atelectasis"):
        assert written[obs]["ci_low"] == by_patient.loc[obs, "ci_low"]
        assert written[obs]["ci_high"] == by_patient.loc[obs, "ci_high"]
        # correlated studies within a patient: resampling studies would give a clearly narrower interval
        width = lambda t: t.loc[obs, "ci_high"] - t.loc[obs, "ci_low"]
        assert width(by_patient) > 1.3 * width(by_study)
