"""Comparison logic on hand-made runs: the per-label choice, the mixed mapping, ensembles, truth table."""

import json

import numpy as np
import pandas as pd
import pytest

from chexutils import compare
from chexutils.errors import DataError
from chexutils.evaluate import RunScores, load_run_scores
from chexutils.labels import OBSERVATIONS
from chexutils.predict import write_predictions


def _study_frame(n=300, seed=0):
    """n single-image studies of n patients; Edema and Cardiomegaly labels with a few uncertain."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"patient": [f"patient{i:05d}" for i in range(n)]})
    frame["study"] = frame["patient"] + "/study1"
    frame["Path"] = "CheXpert-v1.0-small/train/" + frame["study"] + "/view1_frontal.jpg"
    frame["frontal"], frame["line"] = True, np.arange(2, n + 2)
    for obs in OBSERVATIONS:
        frame[obs] = (rng.random(n) < 0.3).astype(float)
    frame.loc[:9, "Edema"] = -1.0
    return frame


def _run(name, frame, informative: dict, seed):
    """Scores = label + noise of the given size per observation (smaller noise = better run)."""
    rng = np.random.default_rng(seed)
    labels = frame.set_index("study")[list(OBSERVATIONS)]
    scores = pd.DataFrame({obs: labels[obs].clip(lower=0) + rng.normal(0, informative.get(obs, 1.0), len(frame))
                           for obs in OBSERVATIONS}, index=labels.index)
    return RunScores(name, labels.set_axis(frame["Path"]), scores.set_axis(frame["Path"]), labels, scores)


def test_choice_follows_a_clear_difference_and_says_when_there_is_none():
    frame = _study_frame()
    zeros = _run("zeros", frame, {"Edema": 2.0, "Cardiomegaly": 0.5}, seed=1)
    ones = _run("ones", frame, {"Edema": 0.3, "Cardiomegaly": 0.5}, seed=1)
    choice = compare.per_label_choice(zeros, ones, frame, n_resamples=500)
    assert choice.loc["Edema", "choice"] == "U-Ones" and choice.loc["Edema", "significant"]
    assert choice.loc["Edema", "verdict"] == "U-Ones"
    assert choice.loc["Cardiomegaly", "U-Ones minus U-Zeros"] == pytest.approx(0.0)
    assert choice.loc["Cardiomegaly", "verdict"].startswith("no significant difference")
    assert (choice["scored on"] == compare.SCORED_ON).all()
    mapping = compare.mixed_mapping(choice)
    assert set(mapping) == set(OBSERVATIONS) and mapping["Edema"] == "U-Ones"


def test_choice_against_other_labels_and_the_truth_table():
    frame = _study_frame()
    zeros = _run("zeros", frame, {"Edema": 2.0}, seed=1)
    ones = _run("ones", frame, {"Edema": 0.3}, seed=1)
    truth = frame.set_index("study")[list(OBSERVATIONS)].clip(lower=0)
    flipped = 1 - truth  # a 'truth' under which U-Ones is worse
    from_labels = compare.per_label_choice(zeros, ones, frame, n_resamples=300)
    from_flipped = compare.per_label_choice(zeros, ones, frame, n_resamples=300, labels=flipped)
    assert from_flipped.loc["Edema", "choice"] == "U-Zeros"
    table = compare.choice_vs_truth(from_labels, from_flipped, {"Edema": "U-Ones", "Cardiomegaly": "U-Zeros"})
    assert list(table.index) == ["Cardiomegaly", "Edema"]
    assert table.loc["Edema", "labels recover planted"] and not table.loc["Edema", "truth agrees with planted"]


def test_ensemble_is_the_mean_probability_joined_by_path(tmp_path):
    frame = _study_frame(20)
    for name, value, order in (("a", 0.2, slice(None)), ("b", 0.6, slice(None, None, -1))):
        run = tmp_path / name
        run.mkdir()
        (run / "config.json").write_text(json.dumps({"policy": name}))
        rows = frame.iloc[order]
        probs = np.full((len(rows), len(OBSERVATIONS)), value) + np.arange(len(rows))[:, None] / 100
        write_predictions(rows, probs, run / "predictions_valid.csv")  # an old run folder's name
    out = compare.ensemble([tmp_path / "a", tmp_path / "b"], frame, "official_valid", tmp_path / "ens")
    assert (out / "predictions_official_valid.csv").is_file()
    scores = load_run_scores(out, frame, "official_valid").image_scores
    first, last = frame["Path"].iloc[0], frame["Path"].iloc[-1]
    assert scores.loc[first, "Edema"] == pytest.approx((0.2 + 0.00 + 0.6 + 0.19) / 2)
    assert scores.loc[last, "Edema"] == pytest.approx((0.2 + 0.19 + 0.6 + 0.00) / 2)
    assert json.loads((out / "ensemble.json").read_text())["policies"] == ["a", "b"]


def test_pairing_needs_both_policies(tmp_path):
    runs = pd.DataFrame({"policy": ["U-Zeros", "U-MultiClass"], "backbone": "densenet121", "image_size": 64,
                         "path": [tmp_path / "a", tmp_path / "b"]}, index=["a", "b"])
    with pytest.raises(DataError, match="both a U-Zeros and a U-Ones"):
        compare.zeros_ones_pair(runs)
    runs.loc["c"] = ["U-Ones", "densenet121", 64, tmp_path / "c"]
    assert compare.zeros_ones_pair(runs) == (tmp_path / "a", tmp_path / "c")
    runs.loc["d"] = ["U-Zeros", "densenet121", 64, tmp_path / "d"]  # a second seed: the first run still pairs
    assert compare.zeros_ones_pair(runs) == (tmp_path / "a", tmp_path / "c")


def test_markdown_table():
    table = pd.DataFrame({"x": [0.12345, np.nan], "y": ["a", "b"]}, index=["r1", "r2"])
    text = compare.markdown(table)
    assert text.splitlines()[2] == "| r1 | 0.123 | a |" and "| r2 | – | b |" in text


def test_per_label_choice_resamples_patients():
    from chexutils.metrics import paired_bootstrap

    rng = np.random.default_rng(5)
    frame = pd.concat([_study_frame(n=80, seed=s).assign(study=lambda f, s=s: f["patient"] + f"/study{s + 1}")
                       for s in range(3)], ignore_index=True)
    frame["Path"] = "CheXpert-v1.0-small/train/" + frame["study"] + "/view1_frontal.jpg"
    labels = frame.set_index("study")[list(OBSERVATIONS)]
    shared = np.repeat(rng.normal(0, 1, (1, 80, len(OBSERVATIONS))), 3, axis=0).reshape(-1, len(OBSERVATIONS))
    runs = []
    for noise in (0.8, 1.0):
        scores = pd.DataFrame(labels.clip(lower=0).to_numpy() + shared + rng.normal(0, noise, shared.shape),
                              index=labels.index, columns=labels.columns)
        runs.append(RunScores(str(noise), labels.set_axis(frame["Path"]), scores.set_axis(frame["Path"]), labels, scores))
    choice = compare.per_label_choice(runs[0], runs[1], frame, n_resamples=300, seed=2)
    groups = frame.drop_duplicates("study").set_index("study")["patient"]
    expected = paired_bootstrap(labels, runs[1].study_scores, runs[0].study_scores, None, 300, 2, groups=groups)
    np.testing.assert_allclose(choice[["ci_low", "ci_high"]].to_numpy(float),
                               expected[["ci_low", "ci_high"]].to_numpy(float))
    by_study = paired_bootstrap(labels, runs[1].study_scores, runs[0].study_scores, None, 300, 2)
    assert not np.allclose(choice["ci_low"].to_numpy(float), by_study["ci_low"].to_numpy(float))
