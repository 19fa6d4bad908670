"""Outside predictions as runs, ensembles on matching keys, and notebook 06 on the phantom's test set."""

import json

import numpy as np
import pandas as pd
import papermill
import pytest

from chexutils.core.errors import DataError
from chexutils.core.labels import COMPETITION_TASKS
from chexutils.core.paths import NOTEBOOK_DIR
from chexutils.core.rundir import OFFICIAL_TEST, RunDir
from chexutils.data import external_predictions as external
from chexutils.data.test_set_files import LABELS_REPO, read_official_test
from chexutils.phantom.generate import generate_phantom
from chexutils.training.config import make_config
from chexutils.training.train import fit

STUDIES = [f"patient6474{i}/study1" for i in range(1, 5)]


def _leaderboard_csv(
    path, studies=STUDIES, columns=("Cardiomegaly", "Edema", "Consolidation", "Atelectasis", "Pleural Effusion"), seed=0
):
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"Study": [f"CheXpert-v1.0/test/{s}" for s in studies]})
    for col in columns:
        frame[col] = rng.random(len(studies))
    frame.to_csv(path, index=False)
    return frame


def test_predictions_keyed_by_study_or_path(tmp_path):
    written = _leaderboard_csv(tmp_path / "model_predictions.csv")  # the leaderboard's column order
    scores = external.study_scores(tmp_path / "model_predictions.csv", STUDIES)
    assert list(scores.index) == STUDIES and set(scores.columns) == set(COMPETITION_TASKS)
    assert scores.loc["patient64742/study1", "Edema"] == pytest.approx(written.loc[1, "Edema"])

    by_path = pd.DataFrame(
        {
            "Path": [
                "test/patient64741/study1/view1_frontal.jpg",
                "test/patient64741/study1/view2_lateral.jpg",
                "CheXpert-v1.0/test/patient64742/study1/view1_frontal.jpg",
            ],
            "Edema": [0.2, 0.7, 0.4],
            "Fracture": [0.1, 0.1, 0.3],
        }
    )
    by_path.to_csv(tmp_path / "images.csv", index=False)
    scores = external.study_scores(tmp_path / "images.csv")
    assert scores["Edema"].to_dict() == {"patient64741/study1": 0.7, "patient64742/study1": 0.4}  # max over views


def test_prediction_errors_are_data_errors(tmp_path):
    _leaderboard_csv(tmp_path / "p.csv", STUDIES[:3])
    with pytest.raises(DataError, match=r"no prediction for 1 labelled study \(first: 'patient64744/study1'\)"):
        external.study_scores(tmp_path / "p.csv", STUDIES)
    with pytest.raises(DataError, match=r"1 predicted study is not in the evaluation set"):
        external.study_scores(tmp_path / "p.csv", STUDIES[:2])
    frame = _leaderboard_csv(tmp_path / "q.csv")
    frame.loc[2, "Edema"] = np.nan
    frame.to_csv(tmp_path / "q.csv", index=False)
    with pytest.raises(DataError, match=r"q.csv line 4: a prediction is blank or not a number"):
        external.study_scores(tmp_path / "q.csv")
    pd.DataFrame({"Image": ["x"], "Edema": [0.5]}).to_csv(tmp_path / "r.csv", index=False)
    with pytest.raises(DataError, match="expected a Study or Path column"):
        external.study_scores(tmp_path / "r.csv")


def test_ensemble_uses_matching_studies_and_observations():
    a = pd.DataFrame({"Edema": [0.2, 0.4, 0.6], "Fracture": [1.0, 1.0, 1.0]}, index=["s1", "s2", "s3"])
    b = pd.DataFrame({"Edema": [0.6, 0.8]}, index=["s3", "s2"])
    mean = external.ensemble({"a": a, "b": b})
    assert list(mean.columns) == ["Edema"] and mean["Edema"].to_dict() == pytest.approx({"s2": 0.6, "s3": 0.6})
    with pytest.raises(DataError, match="share no study"):
        external.ensemble({"a": a, "c": pd.DataFrame({"Edema": [0.1]}, index=["z"])})


@pytest.fixture(scope="module")
def sweep_with_test_set(tmp_path_factory):
    """A phantom with a 40-study test set, one 1-epoch run, and an outside model's predictions."""
    root = tmp_path_factory.mktemp("official")
    generate_phantom(root / "data", patients=16, valid_patients=4, size=(40, 32), seed=2, workers=1, test_patients=40)
    sweep = root / "sweep"
    fit(
        make_config(
            data_dir=str(root / "data"),
            backbone="densenet121",
            image_size=32,
            epochs=1,
            batch_size=16,
            lr=1e-3,
            run_dir=str(sweep / "U-Ones"),
            cache_dir=str(root / "cache"),
            policy="U-Ones",
        )
    )
    truth = pd.read_csv(root / "data" / LABELS_REPO / "phantom_test_truth.csv")
    rng = np.random.default_rng(0)
    outside = pd.DataFrame({"Study": "CheXpert-v1.0/test/" + truth["study"]})
    for task in COMPETITION_TASKS:
        outside[task] = truth[f"{task}|truth"] + rng.normal(0, 0.5, len(truth))
    outside.to_csv(root / "leader_predictions.csv", index=False)
    papermill.execute_notebook(
        str(NOTEBOOK_DIR / "06_official_test.ipynb"),
        str(root / "06.ipynb"),
        progress_bar=False,
        parameters={
            "data_dir": str(root / "data"),
            "output_dir": str(sweep),
            "n_resamples": 200,
            "external_predictions": [str(root / "leader_predictions.csv")],
        },
    )
    return root, sweep


def test_notebook_06_scores_runs_and_outside_models_beside_the_radiologists(sweep_with_test_set):
    root, sweep = sweep_with_test_set
    official = read_official_test(root / "data")
    for name in ("U-Ones", "external-leader_predictions"):
        run = RunDir(sweep / name)
        metrics = json.loads(run.metrics(OFFICIAL_TEST).read_text())
        assert metrics["summary"]["studies"] == 40 and metrics["summary"]["resampled"] == "patients"
        radiologists = pd.read_csv(run.radiologists(OFFICIAL_TEST))
        assert set(radiologists["reader"]) == {"bc4", "bc6", "bc8"}
        for row in radiologists.itertuples():  # the reader's counts are those of their file against groundtruth.csv
            read, reference = official.readers[row.reader][row.observation], official.labels[row.observation]
            assert row.tp == int(((read == 1) & (reference == 1)).sum())
            assert row.fp == int(((read == 1) & (reference == 0)).sum())
    outside = json.loads(RunDir(sweep / "external-leader_predictions").metrics(OFFICIAL_TEST).read_text())
    assert set(outside["observations"]) == set(COMPETITION_TASKS)
    below = outside["summary"]["radiologists_below_curve"]
    assert 0 <= below["mean_over_tasks"] <= 3 and set(below["per_task"]) == set(COMPETITION_TASKS)
    figures = list((sweep / "U-Ones").glob("radiologists_official_test_*.png"))
    assert len(figures) == 5 and min(f.stat().st_size for f in figures) > 10_000
    report = (sweep / "official_test.md").read_text()
    for section in (
        "Official test set (study level",
        "beside the benchmark radiologists",
        "Phantom: readers and their majority against the true findings",
        "external-leader_predictions",
    ):
        assert section in report


def test_report_run_is_chosen_on_the_official_valid_set(tmp_path):
    from chexutils.core.io import write_json
    from chexutils.core.rundir import OFFICIAL_VALID
    from chexutils.evaluation.official_test import choose_report_run

    entries = {}
    for name, mean, legacy in [("a", 0.70, False), ("b", 0.80, False), ("old", 0.75, True)]:
        run = RunDir(tmp_path / name)
        path = run.path / "metrics.json" if legacy else run.metrics(OFFICIAL_VALID)  # an old run folder is read too
        write_json(path, {"observations": {}, "summary": {"mean_auroc_tasks": {"mean": mean}}})
        entries[name] = (run, None)
    entries["external-x"] = (RunDir(tmp_path / "x"), None)  # no valid-set score: never chosen
    chosen, on_valid = choose_report_run(entries)
    assert chosen == "b" and on_valid["old"] == pytest.approx(0.75) and np.isnan(on_valid["external-x"])
    assert choose_report_run(entries, "a")[0] == "a"
    with pytest.raises(DataError, match="report_run 'zzz' is not among the scored entries"):
        choose_report_run(entries, "zzz")
