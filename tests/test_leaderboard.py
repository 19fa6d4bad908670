"""The public CheXpert leaderboard reproduced from the released example models, through the workbook's own readers.

Data: the public repository rajpurkarlab/cheXpert-test-set-labels at commit a03eb34 (groundtruth.csv,
radiologists/benchmark_radiologists/bc{4,6,8}.csv, example_models/predictions/standard/<model>_predictions.csv),
read from ``../shared/data/cheXpert-test-set-labels`` beside the project (or, failing that, from
``data/cheXpert-test-set-labels``, where ``make public-labels`` clones it); skipped when neither is there.

Leaderboard figures (AUC to 3 decimals, "Num Rads Below Curve", per-task counts): one home,
``chexutils.evaluation.references.LEADERBOARD``, with its citation (the public leaderboard's page,
stanfordmlgroup/stanfordmlgroup.github.io competitions/chexpert/index.html @ aa0aa41380d6a66b2288dc0c3731558124dc234b).
Six of the ten example folders are leaderboard entries; ngango2, ngango3, hieupham and desmond are not
(no entry has their AUROCs), so they are only scored.

The counts are reproduced only when a radiologist exactly ON the curve counts as below (jfaboy's Pleural
Effusion reader bc8 sits on a flat stretch of its curve: 3.0 on the leaderboard, 2.8 with "strictly below").
"""

import math

import pytest

from chexutils.core import paths
from chexutils.core.labels import COMPETITION_TASKS
from chexutils.data import external_predictions as external
from chexutils.data.test_set_files import BENCHMARK_READERS, GROUNDTRUTH, LABELS_REPO, read_readers, read_study_labels
from chexutils.evaluation import readers
from chexutils.evaluation.references import LEADERBOARD, NOT_ON_LEADERBOARD

PUBLIC_LABELS_COMMIT = "a03eb34"
SHARED_LABELS = paths.PROJECT_ROOT.parent / "shared" / "data" / LABELS_REPO
CLONED_LABELS = paths.DATA_DIR / LABELS_REPO  # where `make public-labels` puts it
PREDICTIONS = "example_models/predictions/standard"


def labels_dir():
    """The public labels folder, or None."""
    for folder in (SHARED_LABELS, CLONED_LABELS):
        if (folder / GROUNDTRUTH).is_file() and (folder / PREDICTIONS).is_dir():
            return folder
    return None


@pytest.fixture(scope="module")
def public_test_set():
    folder = labels_dir()
    if folder is None:
        pytest.skip(
            f"the public test-set labels are not here: expected {SHARED_LABELS} (or {CLONED_LABELS}); "
            f"fetch them with `make public-labels` (a clone of rajpurkarlab/cheXpert-test-set-labels at "
            f"{PUBLIC_LABELS_COMMIT} into {CLONED_LABELS}) or "
            f"`python -m chexutils public_labels --dest {SHARED_LABELS}`"
        )
    labels = read_study_labels(folder / GROUNDTRUTH)
    return folder, labels, read_readers(folder, BENCHMARK_READERS)


def score(public_test_set, model: str) -> dict:
    """The model's summary as notebook 06 computes it (study-level, joined by study key, columns by name)."""
    folder, labels, benchmark = public_test_set
    scores = external.study_scores(folder / PREDICTIONS / f"{model}_predictions.csv", labels.index)
    assert set(scores.columns) == set(COMPETITION_TASKS)
    _, reader_table, summary = readers.score_official_test(labels, scores, benchmark, n_resamples=20)
    assert len(reader_table) == len(COMPETITION_TASKS) * len(BENCHMARK_READERS)
    return summary


@pytest.mark.parametrize("model", list(LEADERBOARD))
def test_leaderboard_auc_and_radiologists_below_the_curve(public_test_set, model):
    auc, rads, per_task = LEADERBOARD[model]
    summary = score(public_test_set, model)
    assert f"{summary['mean_auroc_tasks']['mean']:.3f}" == auc
    assert summary["mean_auroc_tasks"]["tasks"] == list(COMPETITION_TASKS)
    below = summary["radiologists_below_curve"]
    assert below["readers"] == list(BENCHMARK_READERS) and below["of"] == 3
    assert below["per_task"] == dict(zip(COMPETITION_TASKS, per_task))
    assert round(below["mean_over_tasks"], 1) == rads


@pytest.mark.parametrize("model", NOT_ON_LEADERBOARD)
def test_example_models_not_on_the_leaderboard_are_scored(public_test_set, model):
    summary = score(public_test_set, model)
    mean = summary["mean_auroc_tasks"]["mean"]
    assert math.isfinite(mean) and 0.9 < mean < 0.95
    below = summary["radiologists_below_curve"]
    assert set(below["per_task"]) == set(COMPETITION_TASKS) and 0 <= below["mean_over_tasks"] <= 3
