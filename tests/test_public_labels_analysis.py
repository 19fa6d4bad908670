"""Notebook 09's analysis of the public test-set files, checked against hand counts and independent computations.

Data: rajpurkarlab/cheXpert-test-set-labels (groundtruth.csv, radiologists/, labeler/chexpert_labels.csv,
example_models/), read from ``../shared/data/cheXpert-test-set-labels`` beside the project (or from
``data/cheXpert-test-set-labels``, where ``make public-labels`` clones it); the tests on the files are skipped
when neither is there. The literal counts below were counted by hand with pandas on those files (commit a03eb34)
and are recomputed here by a separate snippet reading the raw CSVs, not through chexutils.
"""

import math
from fractions import Fraction

import numpy as np
import pandas as pd
import papermill
import pytest
from scipy.stats import norm
from sklearn.metrics import cohen_kappa_score, roc_auc_score

from chexutils.core import paths
from chexutils.core.errors import DataError
from chexutils.core.labels import COMPETITION_TASKS
from chexutils.data.test_set_files import GROUNDTRUTH, LABELS_REPO, read_report_labels
from chexutils.evaluation import policy_noise, public_labels
from chexutils.evaluation.references import LEADERBOARD
from chexutils.phantom import expected
from chexutils.scoring.stats import binary_kappa, fleiss_kappa
from chexutils.workbook.runner import load_config

SHARED_LABELS = paths.PROJECT_ROOT.parent / "shared" / "data" / LABELS_REPO
CLONED_LABELS = paths.DATA_DIR / LABELS_REPO
READER_FILES = {
    f"bc{i}": f"radiologists/benchmark_radiologists/bc{i}.csv"
    if i in (4, 6, 8)
    else f"radiologists/groundtruth/bc{i}_gt.csv"
    for i in range(1, 9)
}


def labels_dir():
    for folder in (SHARED_LABELS, CLONED_LABELS):
        if (folder / GROUNDTRUTH).is_file() and (folder / public_labels.REPORT_LABELS_CSV).is_file():
            return folder
    return None


@pytest.fixture(scope="module")
def folder():
    found = labels_dir()
    if found is None:
        pytest.skip(
            f"the public test-set labels are not here: expected {SHARED_LABELS} (or {CLONED_LABELS}); fetch them "
            f"with `make public-labels` (a clone of rajpurkarlab/cheXpert-test-set-labels at a03eb34)"
        )
    return found


@pytest.fixture(scope="module")
def files(folder):
    return public_labels.read_public_files(folder)


@pytest.fixture(scope="module")
def raw(folder):
    """The raw CSVs by pandas alone, indexed by Study: truth, report labels, the 8 readers."""
    truth = pd.read_csv(folder / "groundtruth.csv").set_index("Study")
    report = pd.read_csv(folder / "labeler" / "chexpert_labels.csv").set_index("Study").loc[truth.index]
    reads = {r: pd.read_csv(folder / p).set_index("Study").loc[truth.index] for r, p in READER_FILES.items()}
    return truth, report, reads


# ---- the statistics, on hand-made tables ------------------------------------------------------


def test_fleiss_kappa_on_hand_computed_tables():
    # 3 subjects, 2 raters: agree positive, agree negative, split. P_i = 1, 1, 0 -> mean 2/3; p = (1/2, 1/2) -> P_e = 1/2.
    assert fleiss_kappa([[2, 0], [0, 2], [1, 1]])[0] == pytest.approx(1 / 3)
    # Fleiss (1971)'s worked example as printed in textbooks: 10 subjects, 14 raters, 5 categories -> 0.210.
    table = [
        [0, 0, 0, 0, 14],
        [0, 2, 6, 4, 2],
        [0, 0, 3, 5, 6],
        [0, 3, 9, 2, 0],
        [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0],
        [3, 2, 6, 3, 0],
        [2, 5, 3, 2, 2],
        [6, 5, 2, 1, 0],
        [0, 2, 2, 3, 7],
    ]
    assert round(float(fleiss_kappa(table)[0]), 3) == 0.210
    assert math.isnan(fleiss_kappa([[3, 0], [3, 0]])[0])  # one category only: undefined
    with pytest.raises(ValueError):
        fleiss_kappa([[2, 0], [1, 0]])  # unequal raters


def test_kappas_weighted_by_resample_counts_equal_repeated_rows():
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 2, 60), rng.integers(0, 2, 60)
    assert binary_kappa(a, b)[0] == pytest.approx(cohen_kappa_score(a, b))
    counts = rng.integers(0, 3, (4, 60))
    for row, k in zip(counts, binary_kappa(a, b, counts)):
        assert k == pytest.approx(cohen_kappa_score(np.repeat(a, row), np.repeat(b, row)))
    table = np.column_stack([a + b, 2 - a - b])
    for row, k in zip(counts, fleiss_kappa(table, counts)):
        assert k == pytest.approx(fleiss_kappa(np.repeat(table, row, axis=0))[0])


def test_kind_auroc_is_the_phantom_pair_sum_over_any_kinds():
    shares = {"none": 0.5, "clear": 0.2, "faint": 0.1, "mimic": 0.2}
    targets = {"none": 0.0, "clear": 0.7, "faint": 0.4, "mimic": 0.4}
    kinds = ["none", "clear", "faint", "mimic"]
    positives = [0, shares["clear"], shares["faint"], 0]
    negatives = [shares["none"], 0, 0, shares["mimic"]]
    for tau in expected.NOISE_SDS:
        ours = policy_noise.kind_auroc(positives, negatives, [targets[k] for k in kinds], tau)[0]
        assert ours == pytest.approx(expected.auroc_from_kinds(shares, targets, tau))


def test_report_labels_read_in_the_released_format_and_refuse_other_values(tmp_path):
    header = "Study,No Finding,Enlarged Cardiomediastinum,Cardiomegaly,Lung Opacity,Lung Lesion,Edema,Consolidation,"
    header += "Pneumonia,Atelectasis,Pneumothorax,Pleural Effusion,Pleural Other,Fracture,Support Devices"
    rows = [  # the first two rows of labeler/chexpert_labels.csv as released
        "CheXpert-v1.0/test/patient64741/study1,,,,1.0,,0.0,,,,0.0,0.0,,,1.0",
        "CheXpert-v1.0/test/patient64742/study1,,,,1.0,,,,,-1.0,0.0,,,,",
    ]
    path = tmp_path / "chexpert_labels.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    labels = read_report_labels(path)
    assert labels.loc["patient64742/study1", "Atelectasis"] == -1.0 and math.isnan(
        labels.loc["patient64742/study1", "Edema"]
    )
    assert labels.loc["patient64741/study1", "Edema"] == 0.0 and labels.notna().sum().sum() == 8
    path.write_text("\n".join([header, rows[0], rows[1].replace("-1.0", "2.0")]) + "\n")
    with pytest.raises(DataError, match=r"line 3: column 'Atelectasis' has value '2.0'"):
        read_report_labels(path)


# ---- the files, against hand counts -------------------------------------------------------------

HAND_COUNTED = {  # (observation, report label) -> (truly positive by the 5-reader majority, studies)
    ("Atelectasis", "positive"): (29, 68),
    ("Atelectasis", "negative"): (0, 2),
    ("Atelectasis", "uncertain"): (44, 81),
    ("Atelectasis", "blank"): (80, 349),
    ("Edema", "positive"): (31, 88),
    ("Edema", "negative"): (4, 59),
    ("Edema", "uncertain"): (13, 25),
    ("Edema", "blank"): (30, 328),
    ("Consolidation", "uncertain"): (2, 63),
}


def wilson(k: int, n: int, z: float = float(norm.ppf(0.975))) -> tuple[float, float]:
    p = k / n
    centre, half = (
        (p + z * z / (2 * n)) / (1 + z * z / n),
        z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n),
    )
    return centre - half, centre + half


def test_report_label_meaning_matches_hand_counts(files, raw):
    truth, report, _ = raw
    table = public_labels.report_label_meaning(files.report, files.truth).set_index(["observation", "report_label"])
    assert len(table) == 14 * 4 and table.groupby(level=0)["studies"].sum().eq(500).all()
    codes = {"positive": 1.0, "negative": 0.0, "uncertain": -1.0}
    for (obs, label), (k, n) in HAND_COUNTED.items():
        picked = report[obs].isna() if label == "blank" else report[obs] == codes[label]
        assert (int(truth.loc[picked, obs].sum()), int(picked.sum())) == (k, n)  # the snippet agrees with the literals
        row = table.loc[(obs, label)]
        assert (row["truly_positive"], row["studies"]) == (k, n)
        assert (row["low"], row["high"]) == pytest.approx(wilson(k, n), abs=1e-9)


def test_reader_meaning_and_kappa_against_the_other_seven(files, raw):
    _, _, reads = raw
    meaning = public_labels.reader_meaning(files.readers).set_index(["reader", "observation", "read"])
    agreement = public_labels.reader_agreement(files.readers, n_resamples=200).set_index(["reader", "observation"])
    # hand-counted 2x2 of bc4 against the majority (>= 4) of the other 7: (both +, bc4 + only, bc4 - only, both -)
    hand = {"Atelectasis": (134, 63, 36, 267), "Edema": (49, 36, 32, 383)}
    for obs, (both, only_reader, only_others, neither) in hand.items():
        others = sum(reads[r][obs] for r in reads if r != "bc4") >= 4
        mine = reads["bc4"][obs] == 1
        table = pd.crosstab(mine, others).to_numpy()[::-1, ::-1]  # rows and columns: True first
        assert table.ravel().tolist() == [both, only_reader, only_others, neither]
        assert tuple(meaning.loc[("bc4", obs, "positive"), ["truly_positive", "studies"]]) == (both, both + only_reader)
        assert tuple(meaning.loc[("bc4", obs, "negative"), ["truly_positive", "studies"]]) == (
            only_others,
            only_others + neither,
        )
        n = both + only_reader + only_others + neither
        p_o = Fraction(both + neither, n)
        p_e = Fraction(
            (both + only_reader) * (both + only_others) + (only_others + neither) * (only_reader + neither), n * n
        )
        row = agreement.loc[("bc4", obs)]
        assert row["kappa"] == pytest.approx(float((p_o - p_e) / (1 - p_e)))
        assert row["low"] < row["kappa"] < row["high"]
    assert agreement.loc[("bc4", "Atelectasis"), "kappa"] == pytest.approx(0.5752, abs=5e-5)


def test_fleiss_kappa_of_the_eight_readers_against_pair_counting(files, raw):
    _, _, reads = raw
    fleiss = public_labels.fleiss_table(files.readers, n_resamples=200).set_index("observation")
    for obs in ("Atelectasis", "Edema", "Pleural Effusion"):
        votes = sum(reads[r][obs] for r in reads).to_numpy()
        # independent: agreeing pairs among the 8 readers per study, against chance from the pooled positive share
        agree = Fraction(sum(int(k) * (int(k) - 1) + (8 - int(k)) * (7 - int(k)) for k in votes), 56 * len(votes))
        p = Fraction(int(votes.sum()), 8 * len(votes))
        chance = p * p + (1 - p) * (1 - p)
        assert fleiss.loc[obs, "fleiss_kappa"] == pytest.approx(float((agree - chance) / (1 - chance)))
        assert fleiss.loc[obs, "low"] < fleiss.loc[obs, "fleiss_kappa"] < fleiss.loc[obs, "high"]
    assert np.bincount(sum(reads[r]["Atelectasis"] for r in reads), minlength=9).tolist() == [
        161,
        60,
        43,
        35,
        49,
        35,
        51,
        46,
        20,
    ]
    assert fleiss.loc["Atelectasis", "fleiss_kappa"] == pytest.approx(0.4204, abs=5e-5)
    assert fleiss.loc["Edema", "fleiss_kappa"] == pytest.approx(0.4154, abs=5e-5)


def test_decisions_are_scored_like_readers(files, folder, raw):
    truth = raw[0]
    points = public_labels.decision_points(files).set_index(["who", "task"])
    assert set(points.index.get_level_values("who")) == set(files.decisions) | {"bc4", "bc6", "bc8"}
    decisions = (
        pd.read_csv(folder / public_labels.DECISIONS / "jfaboy_decisions.csv").set_index("Study").loc[truth.index]
    )
    for task in COMPETITION_TASKS:
        y, d = truth[task] == 1, decisions[task] == 1
        row = points.loc[("jfaboy", task)]
        assert (row["tp"], row["fp"], row["tn"], row["fn"]) == (
            (y & d).sum(),
            (~y & d).sum(),
            (~y & ~d).sum(),
            (y & ~d).sum(),
        )


def test_leaderboard_beside_the_published_figures_and_the_ensemble(files):
    results = public_labels.score_models(files, n_resamples=20)
    beside = public_labels.beside_published(results)
    assert list(beside.index) == list(LEADERBOARD) and beside["reproduced"].all()
    board = public_labels.leaderboard(results)
    assert public_labels.ENSEMBLE in board.index and len(board) == len(files.predictions) + 1


def test_policy_implication_from_the_measured_report_labels(files, raw):
    truth, report, _ = raw
    table = policy_noise.policy_implication(files, "report", n_resamples=200)
    assert "No Finding" not in table.index  # no uncertain label: nothing to choose
    assert table.loc["Atelectasis", ["uncertain", "blank", "positive"]].tolist() == ["44/81", "80/349", "29/68"]
    for obs in ("Atelectasis", "Edema", "Consolidation"):
        # independent: at the sharpest learner the scores are the targets themselves, ties counting half
        zeros = report[obs].map({1.0: 1.0}).fillna(0.0)
        ones = report[obs].map({1.0: 1.0, -1.0: 1.0}).fillna(0.0)
        delta = roc_auc_score(truth[obs], ones) - roc_auc_score(truth[obs], zeros)
        shown = float(table.loc[obs, f"delta tau={expected.NOISE_SDS[0]}"].split()[0])
        assert shown == pytest.approx(delta, abs=1.5e-3)
    assert table.loc["Atelectasis", "verdict"] == "U-Ones" and table.loc["Atelectasis", "established"]
    assert table.loc["Support Devices", "verdict"] == expected.NO_DIFFERENCE
    votes = policy_noise.policy_implication(files, "benchmark votes", n_resamples=50)
    assert votes.loc["Atelectasis", "verdict"] == "U-Ones"


def test_the_public_labels_config_runs_notebook_09_alone():
    config = load_config(paths.CONFIG_DIR / "public-labels.yaml")
    assert [s.notebook for s in config.steps] == ["09_public_labels.ipynb"] and not config.grid


@pytest.mark.notebooks
def test_notebook_09_runs_on_the_public_files(folder, tmp_path):
    papermill.execute_notebook(
        str(paths.NOTEBOOK_DIR / "09_public_labels.ipynb"),
        str(tmp_path / "09.ipynb"),
        progress_bar=False,
        parameters={"labels_dir": str(folder), "output_dir": str(tmp_path / "out"), "n_resamples": 50},
    )
    tables = tmp_path / "out" / "tables"
    assert pd.read_csv(tables / "leaderboard_beside_published.csv")["reproduced"].all()
    meaning = pd.read_csv(tables / "report_label_meaning.csv").set_index(["observation", "report_label"])
    assert tuple(meaning.loc[("Atelectasis", "uncertain"), ["truly_positive", "studies"]]) == (44, 81)
    assert len(pd.read_csv(tables / "fleiss_kappa.csv")) == 14
    assert (tmp_path / "out" / "figures" / "report_label_meaning.png").stat().st_size > 10_000
