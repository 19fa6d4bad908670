"""Comparison logic on hand-made runs: the per-label choice, the mixed mapping, ensembles, truth table."""

import json
import math
import re

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from chexutils.core.errors import DataError
from chexutils.core.labels import COMPETITION_TASKS, OBSERVATIONS
from chexutils.data import external_predictions as external
from chexutils.evaluation import compare, official_test, paired_ranking, policy_choice, policy_sweep
from chexutils.evaluation.evaluate import RunScores, load_run_scores
from chexutils.report import plots
from chexutils.scoring import stats
from chexutils.scoring.metrics import bootstrap_auroc, mean_tasks_with_ci, write_metrics
from chexutils.scoring.predict import write_predictions
from chexutils.scoring.stats import holm, smallest_detectable


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
    scores = pd.DataFrame(
        {obs: labels[obs].clip(lower=0) + rng.normal(0, informative.get(obs, 1.0), len(frame)) for obs in OBSERVATIONS},
        index=labels.index,
    )
    return RunScores(name, labels.set_axis(frame["Path"]), scores.set_axis(frame["Path"]), labels, scores)


UNCERTAIN = pd.Series(0.05, index=list(OBSERVATIONS)).mask(lambda s: s.index == "No Finding", 0.0)


def test_choice_follows_a_clear_difference_and_says_when_there_is_none():
    frame = _study_frame()
    zeros = _run("zeros", frame, {"Edema": 2.0, "Cardiomegaly": 0.5}, seed=1)
    ones = _run("ones", frame, {"Edema": 0.3, "Cardiomegaly": 0.5}, seed=1)
    choice = policy_sweep.per_label_choice(zeros, ones, frame, n_resamples=500, uncertain=UNCERTAIN)
    assert choice.loc["Edema", "choice"] == "U-Ones" and choice.loc["Edema", "p_holm"] < 0.05
    assert choice.loc["Edema", "verdict"].startswith("U-Ones (Holm p")
    assert choice.loc["Edema", "positives"] == (frame["Edema"] == 1).sum()  # the 10 uncertain are masked out
    assert choice.loc["Edema", "positives"] + choice.loc["Edema", "negatives"] == len(frame) - 10
    assert choice.loc["Cardiomegaly", "U-Ones minus U-Zeros"] == pytest.approx(0.0)
    assert choice.loc["Cardiomegaly", "verdict"].startswith("no detectable difference")
    assert (choice["criterion"] == "held-out-masked").all()
    assert (
        not choice.loc["No Finding", "eligible"] and "uncertain training labels" in choice.loc["No Finding", "reason"]
    )
    tested = choice.index[choice["eligible"]]
    np.testing.assert_allclose(choice.loc[tested, "p_holm"], holm(choice.loc[tested, "p_value"]))
    assert (
        choice.loc[tested, "smallest detectable"]
        == smallest_detectable(choice.loc[tested, "se_study"], 0.0, 0, alpha=0.05, tests=len(tested))
    ).all()  # one seed per arm: the study-only z test
    mapping = policy_sweep.mixed_mapping(choice)
    assert set(mapping) == set(OBSERVATIONS) and mapping["Edema"] == "U-Ones" and mapping["Cardiomegaly"] == "U-Zeros"


def test_mixed_mapping_takes_the_default_where_the_adjusted_test_does_not_reject():
    frame = _study_frame(seed=2)
    frame["Lung Lesion"] = (frame.index < 5).astype(float)  # 5 positives: not compared, however large its delta
    zeros = _run("zeros", frame, {"Lung Lesion": 3.0, "Fracture": 3.0}, seed=3)
    ones = _run("ones", frame, {"Lung Lesion": 0.1, "Fracture": 0.1}, seed=4)  # elsewhere equally good, other noise
    uncertain = UNCERTAIN.copy()
    uncertain["Fracture"] = 0.005  # <= 1% uncertain training labels: not compared either
    choice = policy_sweep.per_label_choice(zeros, ones, frame, n_resamples=300, uncertain=uncertain)
    noisy_win = choice.index[choice["eligible"] & (choice["U-Ones minus U-Zeros"] > 0)]
    assert len(noisy_win) >= 3 and (choice.loc[noisy_win, "p_holm"] >= 0.05).all()
    assert choice.loc["Lung Lesion", "U-Ones minus U-Zeros"] > 0.2 and choice.loc["Fracture", "p_value"] < 1e-6
    mapping = policy_sweep.mixed_mapping(choice)
    assert {mapping[o] for o in [*noisy_win, "Lung Lesion", "Fracture"]} == {"U-Zeros"}  # not the sign of Δ
    assert "5 in the smaller class < 30" in choice.loc["Lung Lesion", "verdict"]
    view = policy_sweep.choice_view(choice)  # below the CI floor: counts and verdict only
    assert view.loc["Lung Lesion", ["U-Ones mean", "U-Ones minus U-Zeros", "ci_low", "p_value"]].isna().all()
    assert view.loc["Lung Lesion", "positives"] == 5 and view.loc["Lung Lesion", "verdict"].startswith("not compared")
    assert view.loc["Fracture", "U-Ones minus U-Zeros"] == choice.loc["Fracture", "U-Ones minus U-Zeros"]
    assert "0.5% uncertain training labels" in choice.loc["Fracture", "verdict"]
    other = policy_choice.choose(
        choice.drop(columns=["eligible", "p_holm", "verdict", "mapping"]),
        uncertain,
        "held-out-masked",
        default="U-Ones",
    )
    assert other.loc[noisy_win[0], "mapping"] == "U-Ones" and other.loc[noisy_win[0], "verdict"].endswith(
        "U-Ones by default"
    )
    with pytest.raises(DataError, match="mapping"):
        policy_sweep.mixed_mapping(choice.drop(columns="mapping"))


def _arm(frame, informative, seeds):
    return {s: _run(f"s{s}", frame, informative, seed=100 + s).study_scores for s in seeds}


def test_seeds_are_one_arm_with_mean_sd_and_a_wider_test():
    frame = _study_frame(400, seed=4)
    labels = policy_choice.scored_labels("held-out-masked", frame.set_index("study")[list(OBSERVATIONS)])
    groups = frame.set_index("study")["patient"]
    arm_a = _arm(frame, {"Edema": 1.0}, [0, 1, 2])
    arm_b = _arm(frame, {"Edema": 0.8}, [0, 1])
    table = policy_choice.compare_arms(labels, arm_a, arm_b, groups, n_resamples=300)
    y = labels["Edema"].dropna()
    aucs = [roc_auc_score(y, arm_a[s].loc[y.index, "Edema"]) for s in (0, 1, 2)]
    row = table.loc["Edema"]
    assert row["U-Zeros mean"] == pytest.approx(np.mean(aucs)) and row["U-Zeros seed SD"] == pytest.approx(
        np.std(aucs, ddof=1)
    )
    assert row["seeds"] == "3+2" and row["se_seed"] > 0 and row["ci_low"] < row["U-Ones minus U-Zeros"] < row["ci_high"]
    single = policy_choice.compare_arms(labels, {0: arm_a[0]}, {0: arm_b[0]}, groups, n_resamples=300)
    assert single.loc["Edema", "se_seed"] == 0 and "seed noise not in the test" in single.loc["Edema", "note"]
    with pytest.raises(DataError, match="no scores for 1 studies"):
        policy_choice.compare_arms(labels, {0: arm_a[0].iloc[1:]}, arm_b, groups, n_resamples=10)


def test_negative_controls_seed_noise_and_no_finding():
    frame = _study_frame(400, seed=5)
    labels = policy_choice.scored_labels("held-out-masked", frame.set_index("study")[list(OBSERVATIONS)])
    arm = _arm(frame, {}, [0, 1, 2])
    control = policy_choice.seed_noise_control(labels, arm)
    y = labels["Edema"].dropna()
    pairs = [
        abs(roc_auc_score(y, arm[j].loc[y.index, "Edema"]) - roc_auc_score(y, arm[i].loc[y.index, "Edema"]))
        for i, j in ((0, 1), (0, 2), (1, 2))
    ]
    assert control.loc["Edema", "pairs"] == 3 and control.loc["Edema", "mean abs Δ"] == pytest.approx(np.mean(pairs))
    assert control.loc["Edema", "max abs Δ"] == pytest.approx(max(pairs)) and control["flagged"].dtype == bool
    assert policy_choice.seed_noise_control(labels, {0: arm[0]}).empty
    zeros = _run("zeros", frame, {}, seed=7)
    choice = policy_sweep.per_label_choice(zeros, zeros, frame, n_resamples=200, uncertain=UNCERTAIN)
    text = policy_choice.no_finding_control(choice)
    assert "Δ = +0.000" in text and text.endswith("not flagged, as it should be.")
    shifted = _run("ones", frame, {"No Finding": 0.2}, seed=7)
    text = policy_choice.no_finding_control(policy_sweep.per_label_choice(zeros, shifted, frame, n_resamples=200))
    assert "FLAGGED" in text


def test_selection_criteria_targets():
    labels = pd.DataFrame({"Edema": [1.0, 0.0, -1.0, np.nan]}, index=["s1", "s2", "s3", "s4"])
    valid = policy_choice.scored_labels("official-valid", labels)
    masked = policy_choice.scored_labels("held-out-masked", labels)
    assert (
        valid["Edema"].tolist()[:2] == [1.0, 0.0]
        and math.isnan(valid.loc["s3", "Edema"])
        and valid.loc["s4", "Edema"] == 0
    )
    assert masked["Edema"].tolist()[:2] == [1.0, 0.0] and masked.loc[["s3", "s4"], "Edema"].isna().all()
    truth = pd.DataFrame({"Edema": [1, 1, 1, 0, 0]}, index=["s4", "s3", "s2", "s1", "s0"])
    assert policy_choice.scored_labels("held-out-truth", labels, truth)["Edema"].tolist() == [0.0, 1.0, 1.0, 1.0]
    with pytest.raises(DataError, match="phantom_truth.csv"):
        policy_choice.scored_labels("held-out-truth", labels)
    with pytest.raises(DataError, match="lacks 1 held-out studies"):
        policy_choice.scored_labels("held-out-truth", labels, truth.drop("s1"))
    with pytest.raises(DataError, match="official-valid, held-out-masked, held-out-truth"):
        policy_choice.scored_labels("certain", labels)


def test_choice_against_other_labels_and_the_criteria_agreement():
    frame = _study_frame()
    zeros = _run("zeros", frame, {"Edema": 2.0}, seed=1)
    ones = _run("ones", frame, {"Edema": 0.3}, seed=1)
    truth = frame.set_index("study")[list(OBSERVATIONS)].clip(lower=0)
    flipped = 1 - truth  # a 'truth' under which U-Ones is worse
    from_labels = policy_sweep.per_label_choice(zeros, ones, frame, n_resamples=300)
    from_flipped = policy_sweep.per_label_choice(
        zeros, ones, frame, n_resamples=300, labels=flipped, criterion="held-out-truth"
    )
    assert from_flipped.loc["Edema", "choice"] == "U-Zeros" and from_flipped.loc["Edema", "p_holm"] < 0.05
    agreement = policy_choice.criteria_agreement(
        {"held-out-masked": from_labels, "held-out-truth": from_flipped}, expected={"Edema": "U-Ones"}
    )
    assert list(agreement.index) == list(OBSERVATIONS)
    assert not agreement.loc["Edema", "criteria agree"] and agreement.loc["Cardiomegaly", "criteria agree"]
    assert (
        agreement.loc["Edema", "held-out-masked: detected = expected"] is True
        and agreement.loc["Edema", "held-out-truth: detected = expected"] is False
    )
    assert policy_choice.selected({"held-out-masked": from_labels}, "held-out-masked") is from_labels
    with pytest.raises(DataError, match="'held-out-truth' is not available here; available: held-out-masked"):
        policy_choice.selected({"held-out-masked": from_labels}, "held-out-truth")
    summary = policy_choice.verdict_summary(from_labels)
    assert summary.startswith("Selection criterion: **held-out-masked**") and "Edema: U-Ones" in summary
    assert "Default where no difference is detected or nothing is compared: U-Zeros." in summary
    ones_default = policy_choice.choose(from_labels.drop(columns="default"), None, "held-out-masked", default="U-Ones")
    assert "nothing is compared: U-Ones." in policy_choice.verdict_summary(ones_default)


def test_criteria_agreement_compares_only_what_a_criterion_detected_with_the_expected_answer():
    """Issue 19 item 10: the default mapping (nothing detected) equals an expected U-Zeros and never equals an
    expected 'no material difference' by construction, so those cells are empty, not True / False."""
    frame = _study_frame()
    zeros = _run("zeros", frame, {"Edema": 2.0}, seed=1)
    ones = _run("ones", frame, {"Edema": 0.3}, seed=1)
    choice = policy_sweep.per_label_choice(zeros, ones, frame, n_resamples=300)
    expected = {o: "U-Zeros" for o in OBSERVATIONS} | {"Edema": "U-Ones", "No Finding": "no material difference"}
    agreement = policy_choice.criteria_agreement({"held-out-masked": choice}, expected)
    column = agreement["held-out-masked: detected = expected"]
    assert column["Edema"] is True  # detected (Holm) and expected a policy
    assert choice.loc["Cardiomegaly", "mapping"] == "U-Zeros" == expected["Cardiomegaly"]
    assert pd.isna(column["Cardiomegaly"]) and pd.isna(column["No Finding"])  # nothing detected: no comparison
    assert not any(c.endswith(" = expected") and ":" not in c for c in agreement.columns)


def _ranked_sweep(tmp_path, strengths: dict, seeds=(0, 1), n=300, seed=0, run_sd=0.1):
    """A sweep folder's runs table: per arm (policy) and seed, predictions_official_valid.csv on ``n``
    one-study patients; score = strength x label + study noise shared by every run + the arm's own
    noise per study + the run's own noise (seed-to-seed)."""
    rng = np.random.default_rng(seed)
    frame = _study_frame(n, seed=seed)
    tasks = list(COMPETITION_TASKS)
    labels = frame[tasks].clip(lower=0).to_numpy()
    shared = rng.normal(0, 1.0, labels.shape)
    rows = []
    for policy, beta in strengths.items():
        own = rng.normal(0, 0.3, labels.shape)
        for k in seeds:
            score = np.zeros((n, len(OBSERVATIONS)))
            score[:, [OBSERVATIONS.index(t) for t in tasks]] = (
                beta * labels + shared + own + rng.normal(0, run_sd, labels.shape)
            )
            path = tmp_path / f"{policy}_seed{k}"
            path.mkdir(parents=True)
            write_predictions(frame, 1 / (1 + np.exp(-score)), path / "predictions_official_valid.csv")
            rows.append(
                {
                    "run": path.name,
                    "policy": policy,
                    "backbone": "densenet121",
                    "image_size": 64,
                    "seed": k,
                    "path": path,
                }
            )
    return pd.DataFrame(rows).set_index("run"), frame


def test_ranking_names_the_pairs_a_paired_seed_aware_test_separates_not_the_ci_overlap(tmp_path):
    # Hand case: a, b, c with 2 seeds each. Each arm's task-mean CI overlaps its neighbour's, so the
    # old neighbours-only overlap rule said "all overlap", although a's and c's CIs do not even
    # overlap; the paired test on the same studies separates every pair.
    runs, frame = _ranked_sweep(tmp_path, {"a": 1.3, "b": 1.15, "c": 1.0})
    labels = frame.set_index("study")[list(COMPETITION_TASKS)]
    ci = {p: mean_tasks_with_ci(labels, _scores(tmp_path / f"{p}_seed0", frame), n_resamples=300) for p in "abc"}
    assert ci["a"]["ci_low"] < ci["b"]["ci_high"] and ci["b"]["ci_low"] < ci["c"]["ci_high"]  # neighbours overlap
    assert ci["a"]["ci_low"] > ci["c"]["ci_high"]  # the non-neighbours do not
    pairs, text = compare.ranking(runs, frame)
    assert (
        list(zip(pairs["a"], pairs["b"]))
        == [
            ("a densenet121 64px", "b densenet121 64px"),
            ("a densenet121 64px", "c densenet121 64px"),
            ("b densenet121 64px", "c densenet121 64px"),
        ]
        and (pairs["seeds"] == "2+2").all()
    )
    np.testing.assert_allclose(pairs["p_holm"], holm(pairs["p_value"]))
    for better, worse in (("a", "b"), ("a", "c"), ("b", "c")):
        row = pairs[(pairs["a"] == f"{better} densenet121 64px") & (pairs["b"] == f"{worse} densenet121 64px")].iloc[0]
        assert (
            f"{better} densenet121 64px > {worse} densenet121 64px (Δ {-row['delta']:.3f}, Holm p {row['p_holm']:.3g})"
            in text
        )
    assert "overlap" not in text and "Not ranked" not in text and "Holm over the pairs" in text


def test_ranking_says_not_ranked_where_no_pair_test_rejects(tmp_path):
    runs, frame = _ranked_sweep(tmp_path, {"a": 1.3, "b": 1.3, "c": 0.9}, seed=1)
    pairs, text = compare.ranking(runs, frame)
    a, b, c = (f"{p} densenet121 64px" for p in "abc")
    assert f"{a} > {c} (Δ" in text and f"{b} > {c} (Δ" in text
    assert f"Not ranked (no detectable difference): {a} vs {b} (Holm p" in text
    one_seed, frame = _ranked_sweep(tmp_path / "one", {"a": 1.3, "b": 1.3}, seeds=(0,), seed=2)
    _, text = compare.ranking(one_seed, frame)  # one run per arm: named by the run, no seed noise in the test
    assert "a_seed0 vs b_seed0" in text and "seed noise is not in those tests" in text


def test_ranking_holds_the_family_wise_error_under_the_null():
    # three equally good arms of 2 seeds: Holm over the 3 pairs rejects any in <= 5% of replicates
    rng = np.random.default_rng(7)
    n, tasks = 200, list(COMPETITION_TASKS)
    index = [f"s{i}" for i in range(n)]
    any_rejected = []
    for _ in range(200):
        labels = pd.DataFrame((rng.random((n, 5)) < 0.3).astype(float), index=index, columns=tasks)
        shared = labels + rng.normal(0, 1.0, (n, 5))
        arms = {}
        for arm in "abc":
            own = shared + rng.normal(0, 0.3, (n, 5))
            arms[arm] = {k: own + rng.normal(0, 0.1, (n, 5)) for k in (0, 1)}
        any_rejected.append((paired_ranking.rank_pairs(labels, arms)["p_holm"] < 0.05).any())
    rate = float(np.mean(any_rejected))
    print(f"family-wise rejection rate under the null: {rate:.3f}")
    assert rate <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / 200)


def _scores(run_dir, frame):
    return load_run_scores(run_dir, frame, "official_valid").study_scores


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


def test_valid_ensemble_takes_each_runs_study_max_then_the_mean_like_the_test_ensemble(tmp_path):
    """Issue 19 item 12: two images per study; run a scores them (0.9, 0.1), run b (0.1, 0.9). Averaging
    first then taking the study max gives 0.5; the official test's order (study max per run, then the
    mean; data.external_predictions.ensemble of the runs' study scores) gives 0.9. Both sets now agree."""
    frame = _study_frame(6)
    frame = pd.concat([frame, frame.assign(Path=frame["Path"].str.replace("view1_frontal", "view2_lateral"))])
    frame = frame.assign(frontal=frame["Path"].str.contains("frontal")).reset_index(drop=True)
    for name, first in (("a", 0.9), ("b", 0.1)):
        run = tmp_path / name
        run.mkdir()
        (run / "config.json").write_text(json.dumps({"policy": name}))
        probs = np.where(frame["frontal"].to_numpy()[:, None], first, 1 - first) * np.ones((1, len(OBSERVATIONS)))
        write_predictions(frame, probs, run / "predictions_official_valid.csv")
    out = compare.ensemble([tmp_path / "a", tmp_path / "b"], frame, "official_valid", tmp_path / "ens")
    valid = load_run_scores(out, frame, "official_valid").study_scores
    assert valid["Edema"].to_numpy() == pytest.approx(0.9)
    test = external.ensemble({n: _scores(tmp_path / n, frame) for n in "ab"})  # the official test's combine
    assert valid.loc[test.index, test.columns].to_numpy() == pytest.approx(test.to_numpy(), abs=1e-6)


def test_policy_arms_group_seeds_and_need_both_policies(tmp_path):
    runs = pd.DataFrame(
        {
            "policy": ["U-Zeros", "U-MultiClass", "U-Zeros"],
            "backbone": "densenet121",
            "image_size": 64,
            "seed": [0, 0, 1],
            "path": [tmp_path / "a", tmp_path / "b", tmp_path / "d"],
        },
        index=["a", "b", "d"],
    )
    with pytest.raises(DataError, match="U-Zeros, U-Ones"):
        policy_sweep.policy_arms(runs)
    assert policy_sweep.missing_arms(runs) == "the grid has no U-Ones run (policies here: U-MultiClass, U-Zeros)"
    skipped = policy_sweep.compare_policies(runs, tmp_path, tmp_path, "", tmp_path / "never-read.csv")
    assert skipped.skipped.startswith("Per-label choice skipped: the grid has no U-Ones run")
    assert skipped.table.empty and list(skipped.sections()) == ["Per-label choice (official-valid)"]
    (tmp_path / "mixed_mapping.json").write_text("{}")  # an earlier sweep's choice must not feed stage 2
    assert skipped.write(tmp_path) is None and not (tmp_path / "mixed_mapping.json").exists()
    elsewhere = runs.copy()
    elsewhere.loc["c"] = ["U-Ones", "densenet121", 128, 0, tmp_path / "c"]
    assert policy_sweep.missing_arms(elsewhere) == "no backbone and image size has runs of both U-Zeros and U-Ones"
    runs.loc["c"] = ["U-Ones", "densenet121", 64, 0, tmp_path / "c"]
    assert policy_sweep.missing_arms(runs) == ""
    assert policy_sweep.policy_arms(runs) == {
        "U-Zeros": {0: tmp_path / "a", 1: tmp_path / "d"},
        "U-Ones": {0: tmp_path / "c"},
    }


def test_auroc_table_shows_counts_and_no_ci_below_the_floor(tmp_path):
    frame = _study_frame(200, seed=6)
    frame["Fracture"] = 0.0
    frame.loc[frame.index[:2], "Fracture"] = 1.0  # 2 positives: n/a
    frame.loc[frame.index[:6], "Pneumonia"] = 1.0
    frame.loc[frame.index[6:], "Pneumonia"] = 0.0  # 6 positives: point value, no CI
    run = _run("r", frame, {}, seed=8)
    groups = frame.set_index("study")["patient"]
    table = bootstrap_auroc(run.study_labels, run.study_scores, 100, groups=groups)
    summary = {"mean_auroc_tasks": mean_tasks_with_ci(run.study_labels, run.study_scores, n_resamples=100)}
    write_metrics(table, summary, tmp_path / "r" / "metrics_official_valid.json")
    values, text = compare.auroc_table(pd.DataFrame({"path": [tmp_path / "r"]}, index=["r"]))
    edema = table.loc["Edema"]
    assert text.loc["r", "Edema"] == (
        f"{edema['auroc']:.3f} ({edema['ci_low']:.3f}–{edema['ci_high']:.3f}) "
        f"[{edema['positives']}+ {edema['negatives']}−; {edema['patients']} pt]"
    )
    assert text.loc["r", "Fracture"] == "n/a [2+ 198−; 200 pt]" and math.isnan(values.loc["r", "Fracture"])
    assert (
        text.loc["r", "Pneumonia"].endswith("few positives [6+ 194−; 200 pt]") and "(" not in text.loc["r", "Pneumonia"]
    )


def test_a_model_chosen_on_a_set_is_never_reported_there_as_an_estimate(tmp_path):
    """Issue 19 item 6: mixed-selected's mapping was chosen on official valid (the sweep's policy_choice.csv
    criterion), so its row there, in the table and the ranking, says '(chose it; not an estimate)'; chosen
    on held-out patients, it is marked on the held-out set instead. 06's reported model likewise."""
    frame = _study_frame(200, seed=6)
    groups = frame.set_index("study")["patient"]
    rows = []
    for name, policy in (("U-Zeros", "U-Zeros"), ("mixed-selected", "mixed")):
        run = _run(name, frame, {}, seed=len(rows))
        folder = tmp_path / name
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({"policy": policy}))
        table = bootstrap_auroc(run.study_labels, run.study_scores, 50, groups=groups)
        summary = {"mean_auroc_tasks": mean_tasks_with_ci(run.study_labels, run.study_scores, n_resamples=50)}
        write_metrics(table, summary, folder / "metrics_official_valid.json")
        write_predictions(
            frame, run.study_scores.loc[frame["study"]].to_numpy(), folder / "predictions_official_valid.csv"
        )
        rows.append(
            {"run": name, "policy": policy, "backbone": "densenet121", "image_size": 64, "seed": 0, "path": folder}
        )
    runs = pd.DataFrame(rows).set_index("run")
    assert compare.CHOICE_CSV == policy_sweep.CHOICE_CSV
    marked = "mixed-selected (chose it; not an estimate)"
    assert compare.chosen_on(tmp_path / "mixed-selected") == "official_valid"  # no policy_choice.csv: 05's default
    pd.DataFrame({"criterion": ["official-valid"] * 2}, index=["Edema", "Atelectasis"]).to_csv(
        tmp_path / "policy_choice.csv"
    )
    values, text = compare.auroc_table(runs)
    assert list(text.index) == ["U-Zeros", marked] and list(values.index) == ["U-Zeros", marked]
    pairs, sentence = compare.ranking(runs, frame)
    assert marked in set(pairs["a"]) | set(pairs["b"])
    assert "(chose it" in compare.with_references(values, tmp_path).index[1]
    pd.DataFrame({"criterion": ["held-out-masked"] * 2}, index=["Edema", "Atelectasis"]).to_csv(
        tmp_path / "policy_choice.csv"
    )
    assert list(compare.auroc_table(runs)[1].index) == ["U-Zeros", "mixed-selected"]
    assert compare.chosen_label("mixed-selected", tmp_path / "mixed-selected", "held_out") == marked
    assert compare.chosen_on(tmp_path / "U-Zeros") is None
    on_valid = pd.Series({"ensemble-all": 0.682, "U-Zeros": 0.64})
    line = official_test.report_line("ensemble-all", on_valid)
    assert "chosen on the official valid set" in line and "0.682 (chose it; not an estimate)" in line
    assert "Its estimate is its official test row" in line


def test_markdown_table():
    table = pd.DataFrame({"x": [0.12345, np.nan], "y": ["a", "b|c"]}, index=["r1", "r2"])
    text = compare.markdown(table)
    assert text.splitlines()[2] == "| r1 | 0.123 | a |" and "| r2 | – | b\\|c |" in text


def test_per_label_choice_resamples_patients():
    from chexutils.evaluation import policy_choice

    rng = np.random.default_rng(5)
    frame = pd.concat(
        [_study_frame(n=80, seed=s).assign(study=lambda f, s=s: f["patient"] + f"/study{s + 1}") for s in range(3)],
        ignore_index=True,
    )
    frame["Path"] = "CheXpert-v1.0-small/train/" + frame["study"] + "/view1_frontal.jpg"
    labels = frame.set_index("study")[list(OBSERVATIONS)]
    shared = np.repeat(rng.normal(0, 1, (1, 80, len(OBSERVATIONS))), 3, axis=0).reshape(-1, len(OBSERVATIONS))
    runs = []
    for noise in (0.8, 1.0):
        scores = pd.DataFrame(
            labels.clip(lower=0).to_numpy() + shared + rng.normal(0, noise, shared.shape),
            index=labels.index,
            columns=labels.columns,
        )
        runs.append(
            RunScores(str(noise), labels.set_axis(frame["Path"]), scores.set_axis(frame["Path"]), labels, scores)
        )
    choice = policy_sweep.per_label_choice(runs[0], runs[1], frame, n_resamples=300, seed=2)
    targets = policy_choice.scored_labels("held-out-masked", labels)
    arms = ({0: runs[0].study_scores}, {0: runs[1].study_scores})
    groups = frame.drop_duplicates("study").set_index("study")["patient"]
    by_patient = policy_choice.per_label_choice(*arms, targets, "held-out-masked", groups, None, 300, 2)
    by_study = policy_choice.per_label_choice(*arms, targets, "held-out-masked", None, None, 300, 2)
    columns = ["ci_low", "ci_high", "p_value", "se"]  # the patient-clustered test and interval
    np.testing.assert_allclose(choice[columns].to_numpy(float), by_patient[columns].to_numpy(float), equal_nan=True)
    assert not np.allclose(choice["p_value"].to_numpy(float), by_study["p_value"].to_numpy(float), equal_nan=True)


def test_rows_beside_published_numbers_name_their_data_and_the_colour_scale_covers_every_value(tmp_path):
    values = pd.DataFrame({"Edema": [0.91, 0.202], "Atelectasis": [0.8, float("nan")]}, index=["U-Ones", "U-Zeros"])
    assert compare.with_references(values, tmp_path).index[0] == "[CheXpert, this workbook] U-Ones"
    (tmp_path / "phantom_truth.json").write_text("{}")
    beside = compare.with_references(values, tmp_path)
    assert list(beside.index[:2]) == [
        "[phantom CheXpert, this workbook] U-Ones",
        "[phantom CheXpert, this workbook] U-Zeros",
    ]
    assert all(i.startswith("[published, real CheXpert] ") for i in beside.index[2:]) and len(beside) > 2
    mesh = plots.comparison_heatmap(beside, tmp_path / "comparison.png").axes[0].collections[0]
    assert (mesh.norm.vmin, mesh.norm.vmax) == (0.2, 1.0)  # 0.202 gets its own colour, not chance's
    assert plots.comparison_heatmap(values.loc[["U-Ones"]]).axes[0].collections[0].norm.vmin == 0.5


def _simulated_rejections(delta, se_study, seed_sd, k, level_each, reps, rng):
    """Share of simulated experiments in which the real seed-arm test rejects at ``level_each``.

    Per experiment: k per-seed AUROCs per arm with seed SD ``seed_sd``, arm b shifted by ``delta``
    plus a study-level error of SD ``se_study`` shared by its seeds (the same studies score every
    run); the test's study variance is se_study^2 (what DeLong supplies)."""
    hits = 0
    for _ in range(reps):
        auc_a = 0.8 + seed_sd * rng.standard_normal(k)
        auc_b = 0.8 + delta + se_study * rng.standard_normal() + seed_sd * rng.standard_normal(k)
        hits += stats.seed_arm_statistic(auc_a, auc_b, se_study**2)["p_value"] < level_each
    return hits / reps


def _hand_comparison(se_study, seed_sd, k, observations=14):
    """A compare_arms-like table: every observation eligible, no rejection, the given SE parts."""
    se_seed = seed_sd * math.sqrt(2 / k)
    return pd.DataFrame(
        {
            "positives": 200,
            "negatives": 800,
            "seeds": f"{k}+{k}",
            "U-Ones minus U-Zeros": 0.0,
            "se": math.hypot(se_study, se_seed),
            "se_study": se_study,
            "se_seed": se_seed,
            "seed_df": 2 * k - 2,
            "p_value": 0.9,
        },
        index=[f"obs{i}" for i in range(observations)],
    )


@pytest.mark.parametrize(
    "se_study, seed_sd, k, m",
    [(0.01, 0.01, 2, 14), (0.01, 0.01, 3, 5), (0.02, 0.005, 2, 1)],
)
def test_printed_smallest_detectable_delta_gives_the_real_test_80_percent_power(se_study, seed_sd, k, m):
    # the figure as choose() prints it, then the real test run on simulated seeds at that delta
    choice = policy_choice.choose(_hand_comparison(se_study, seed_sd, k, m), None, "held-out-masked")
    detectable = choice["smallest detectable"].iloc[0]
    assert f"smallest detectable Δ {detectable:.3f}" in choice["verdict"].iloc[0]
    reps = 4000
    power = _simulated_rejections(detectable, se_study, seed_sd, k, 0.05 / m, reps, np.random.default_rng(11))
    print(f"k={k} m={m}: smallest detectable {detectable:.4f}, simulated power {power:.3f}")
    assert power == pytest.approx(0.80, abs=0.04)  # Monte-Carlo SE 0.006


def test_two_seeds_per_arm_say_when_they_cannot_reach_a_useful_power():
    choice = policy_choice.choose(_hand_comparison(0.01, 0.01, 2), None, "held-out-masked")
    verdict = choice["verdict"].iloc[0]
    detectable = choice["smallest detectable"].iloc[0]
    assert f"with 2 seeds per arm no Δ below {detectable:.3f} is detectable at 80% power" in verdict
    more = int(re.search(r"use (\d+) seeds per arm", verdict).group(1))
    assert more > 2
    at_more = policy_choice.choose(_hand_comparison(0.01, 0.01, more), None, "held-out-masked")
    assert at_more["smallest detectable"].iloc[0] < detectable and not at_more["seeds note"].iloc[0]
    assert "Seeds, not studies, limit it for 14 observation(s): With 2 seeds per arm" in policy_choice.verdict_summary(
        choice.assign(criterion="held-out-masked")
    )
    # no note where the studies, not the seeds, are the limit
    assert not policy_choice.choose(_hand_comparison(0.02, 0.001, 2), None, "x")["seeds note"].iloc[0]


def test_delta_interval_beside_the_verdict_excludes_zero_exactly_when_p_is_below_alpha():
    # Under the null with 2 seeds per arm, the interval compare_arms prints and its p-value make the
    # same call in every replicate (same SE, same df); the bootstrap interval is only secondary.
    rng = np.random.default_rng(21)
    n = 120
    study = [f"s{i}" for i in range(n)]
    y = (np.arange(n) % 3 == 0).astype(float)
    labels = pd.DataFrame({"Edema": y}, index=study)
    calls, agree = [], 0
    for _ in range(300):
        shared = y + rng.normal(0, 1.0, n)  # what every run learns from these studies
        arms = [shared + rng.normal(0, 0.7, n) for _ in range(2)]  # each policy's own view, equally good
        runs = [pd.DataFrame({"Edema": arm + rng.normal(0, 0.3, n)}, index=study) for arm in arms for _ in range(2)]
        row = policy_choice.compare_arms(labels, {0: runs[0], 1: runs[1]}, {0: runs[2], 1: runs[3]}, n_resamples=20)
        row = row.loc["Edema"]
        excludes = bool(row["ci_low"] > 0 or row["ci_high"] < 0)
        rejects = bool(row["p_value"] < 0.05)
        agree += excludes == rejects
        calls.append(rejects)
        assert row["ci_low"] < row["U-Ones minus U-Zeros"] < row["ci_high"] and row["seeds"] == "2+2"
        assert "bootstrap ci_low (secondary)" in row.index
    print(f"null rejections {sum(calls)} of {len(calls)}; interval and p agree in {agree}")
    assert agree == len(calls) and 0 < sum(calls) < len(calls) / 4


def test_one_seed_per_arm_is_exploratory_and_writes_no_mapping(tmp_path):
    frame = _study_frame(300, seed=9)
    labels = policy_choice.scored_labels("held-out-masked", frame.set_index("study")[list(OBSERVATIONS)])
    groups = frame.set_index("study")["patient"]
    zeros, ones = _arm(frame, {"Edema": 2.0}, [0, 1]), _arm(frame, {"Edema": 0.3}, [2, 3])
    one_each = policy_choice.per_label_choice(
        {0: zeros[0]}, {2: ones[2]}, labels, "held-out-masked", groups, UNCERTAIN, n_resamples=50
    )
    single = policy_sweep.PolicyComparison("held-out-masked", choices={"held-out-masked": one_each}, summary="s")
    (tmp_path / "mixed_mapping.json").write_text('{"Edema": "U-Ones"}')  # an earlier sweep's mapping
    assert single.write(tmp_path) is None and not (tmp_path / "mixed_mapping.json").exists()
    written = pd.read_csv(tmp_path / "policy_choice.csv", index_col=0)
    assert written["exploratory"].str.startswith("exploratory: 1 seed per arm").all()
    titles = list(single.sections())
    assert titles[0].startswith("Per-label choice (held-out-masked) — exploratory: 1 seed per arm")
    assert titles[1].startswith("Per-label choice table (held-out-masked) — exploratory")
    two_each = policy_choice.per_label_choice(zeros, ones, labels, "held-out-masked", groups, UNCERTAIN, n_resamples=50)
    paired = policy_sweep.PolicyComparison("held-out-masked", choices={"held-out-masked": two_each}, summary="s")
    assert not paired.exploratory and paired.write(tmp_path) == json.loads(
        (tmp_path / "mixed_mapping.json").read_text()
    )
    assert "exploratory" not in " ".join(paired.sections())
