"""Metrics: point estimates equal sklearn, the vectorised bootstrap equals sklearn per resample, CIs cover."""

import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm
from scipy.stats import t as t_dist
from sklearn.metrics import average_precision_score, roc_auc_score

from chexutils.core.labels import COMPETITION_TASKS, OBSERVATIONS
from chexutils.scoring.metrics import (
    CI_MIN_POSITIVES,
    bootstrap_auroc,
    mean_tasks_with_ci,
    metric_text,
    paired_bootstrap,
    per_observation,
    resample_counts,
    shown,
    weighted_auroc_ap,
    write_metrics,
)
from chexutils.scoring.stats import auroc_interval, delong_cov


def study_tables(n=200, seed=0, observations=OBSERVATIONS, uncertain=0.1):
    """Random study labels (1/0/-1/blank) and tied scores (one decimal) that track the labels."""
    rng = np.random.default_rng(seed)
    p_blank = 0.3 - uncertain
    values = rng.choice([1.0, 0.0, -1.0, np.nan], size=(n, len(observations)), p=[0.25, 0.45, uncertain, p_blank])
    index = pd.Index([f"study{i}" for i in range(n)], name="study")
    labels = pd.DataFrame(values, index=index, columns=list(observations))
    signal = labels.fillna(0.0).clip(lower=0.0).to_numpy()
    scores = pd.DataFrame(np.round(rng.random(values.shape) + 0.4 * signal, 1), index=index, columns=labels.columns)
    return labels, scores


def certain(labels, scores, obs):
    keep = labels[obs].fillna(0.0).to_numpy() != -1.0
    return labels[obs].fillna(0.0).to_numpy()[keep].astype(int), scores[obs].to_numpy()[keep], keep


def test_point_estimates_equal_sklearn_with_ties():
    labels, scores = study_tables()
    table = bootstrap_auroc(labels, scores, n_resamples=50)
    for obs in labels.columns:
        y, s, _ = certain(labels, scores, obs)
        assert len(np.unique(s)) < len(s)  # ties present
        assert table.loc[obs, "auroc"] == roc_auc_score(y, s)
        assert table.loc[obs, "ap"] == average_precision_score(y, s)
        assert (table.loc[obs, "n"], table.loc[obs, "positives"]) == (len(y), y.sum())
        # the vectorised core with unit weights agrees too
        auroc, ap = weighted_auroc_ap(y, s, np.ones((1, len(y))))
        assert auroc[0] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        assert ap[0] == pytest.approx(average_precision_score(y, s), abs=1e-12)


def test_each_resample_equals_sklearn_on_the_reconstructed_data():
    labels, scores = study_tables(n=120, seed=1)
    counts = resample_counts(len(labels), 40, seed=7)
    assert counts.shape == (40, 120) and (counts.sum(axis=1) == 120).all()
    for obs in ["Edema", "Pleural Effusion"]:
        y, s, keep = certain(labels, scores, obs)
        auroc, ap = weighted_auroc_ap(y, s, counts[:, keep])
        for r in range(0, 40, 7):
            rows = np.repeat(np.arange(len(labels)), counts[r])  # the resample, studies repeated
            y_r = labels[obs].fillna(0.0).to_numpy()[rows]
            s_r = scores[obs].to_numpy()[rows][y_r != -1.0]
            y_r = y_r[y_r != -1.0].astype(int)
            assert auroc[r] == pytest.approx(roc_auc_score(y_r, s_r), abs=1e-12)
            assert ap[r] == pytest.approx(average_precision_score(y_r, s_r), abs=1e-12)
        # bootstrap_auroc's AP CI is the percentile interval of exactly these resamples; its AUROC CI
        # is the logit DeLong interval (chexutils.scoring.stats)
        table = bootstrap_auroc(labels, scores, n_resamples=40, seed=7)
        assert table.loc[obs, "ap_low"] == pytest.approx(np.quantile(ap, 0.025))
        assert table.loc[obs, "ap_high"] == pytest.approx(np.quantile(ap, 0.975))
        interval = auroc_interval(y, s)
        assert (table.loc[obs, "ci_low"], table.loc[obs, "ci_high"]) == pytest.approx(
            (interval["ci_low"], interval["ci_high"])
        )


def test_binormal_ci_covers_the_true_auroc():
    d = 1.0
    truth = norm.cdf(d / math.sqrt(2))
    rng = np.random.default_rng(11)
    covered = []
    for i in range(200):
        y = rng.random(120) < 0.4
        s = rng.normal(size=120) + d * y
        frame = pd.DataFrame({"Edema": y.astype(float)})
        table = bootstrap_auroc(frame, pd.DataFrame({"Edema": s}), n_resamples=300, seed=i)
        covered.append(table.loc["Edema", "ci_low"] <= truth <= table.loc["Edema", "ci_high"])
    coverage = float(np.mean(covered))
    print(f"95% CI coverage over 200 binormal data sets: {coverage:.3f}")
    assert 0.88 <= coverage <= 0.99


def test_group_resampling_keeps_groups_whole():
    groups = np.array(["p1", "p1", "p2", "p3", "p3", "p3", "p4"])
    counts = resample_counts(len(groups), 500, seed=3, groups=groups)
    for g in np.unique(groups):
        block = counts[:, groups == g]
        assert (block == block[:, :1]).all()  # every row of a group drawn equally often
    first_rows = [np.flatnonzero(groups == g)[0] for g in np.unique(groups)]
    assert (counts[:, first_rows].sum(axis=1) == 4).all()  # 4 patients drawn per resample
    assert (counts == 0).any() and (counts > 1).any()


def test_duplicated_rows_resampled_by_group_match_the_original_by_row():
    labels, scores = study_tables(n=80, seed=4, observations=["Edema", "Atelectasis"], uncertain=0.0)
    copies = np.repeat(np.arange(len(labels)), 3)
    big_labels = labels.iloc[copies].set_axis([f"img{i}" for i in range(len(copies))])
    big_scores = scores.iloc[copies].set_axis(big_labels.index)
    patients = pd.Series(labels.index[copies], index=big_labels.index)
    by_row = bootstrap_auroc(labels, scores, n_resamples=200, seed=5)
    by_group = bootstrap_auroc(big_labels, big_scores, n_resamples=200, seed=5, groups=patients)
    columns = ["auroc", "ap", "ap_low", "ap_high"]  # bootstrap: identical resamples, identical values
    np.testing.assert_allclose(by_group[columns].to_numpy(float), by_row[columns].to_numpy(float), atol=1e-12)
    # clustered DeLong on 3 copies per patient ~ DeLong on the originals (not 1/sqrt(3) narrower)
    width = lambda t: (t["ci_high"] - t["ci_low"]).to_numpy(float)  # noqa: E731
    np.testing.assert_allclose(width(by_group), width(by_row), rtol=0.1)
    assert (by_group["patients"] == 80).all() and (by_group["n"] == 3 * by_row["n"]).all()


def test_paired_identical_scores_give_zero_delta_and_p_one():
    labels, scores = study_tables(seed=2)
    out = paired_bootstrap(labels, scores, scores.copy(), "Edema", n_resamples=300)
    assert out["delta"] == 0.0 and out["ci_low"] == 0.0 and out["ci_high"] == 0.0 and out["p_value"] == 1.0
    assert out["n"] == (labels["Edema"] != -1.0).sum()


def test_paired_clearly_better_scores_are_significant():
    labels, scores = study_tables(seed=3)
    rng = np.random.default_rng(0)
    noise = pd.DataFrame(rng.random(scores.shape), index=scores.index, columns=scores.columns)
    out = paired_bootstrap(labels, scores, noise, "Cardiomegaly", n_resamples=500)
    assert out["delta"] > 0 and out["ci_low"] > 0 and out["p_value"] < 0.05
    assert out["p_value"] >= 1 / 501
    table = paired_bootstrap(labels, scores, noise, None, n_resamples=500)
    assert list(table.index) == list(OBSERVATIONS)
    assert table.loc["Cardiomegaly", "delta"] == pytest.approx(out["delta"])
    assert table.loc["Cardiomegaly", "p_value"] == out["p_value"]  # same resamples for every observation


def test_one_class_observation_is_nan_with_a_reason_and_no_warning():
    labels, scores = study_tables(n=60, seed=5)
    labels["Fracture"] = 0.0
    labels.loc[labels.index[:3], "Fracture"] = -1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table = bootstrap_auroc(labels, scores, n_resamples=100)
        paired = paired_bootstrap(labels, scores, scores * 0.5, "Fracture", n_resamples=100)
    row = table.loc["Fracture"]
    assert row[["auroc", "ci_low", "ci_high", "ap", "ap_low", "ap_high"]].isna().all()
    assert row["note"] == "only one class present (0 positive of 57)"
    assert math.isnan(paired["delta"]) and math.isnan(paired["p_value"]) and "only one class" in paired["note"]


@pytest.mark.parametrize("positives, how", [(2, "n/a"), (5, "few positives"), (10, "with CI")])
def test_no_interval_below_the_floor_and_n_a_below_three(positives, how):
    y = np.zeros(100)
    y[np.linspace(5, 95, positives).astype(int)] = 1.0
    labels = pd.DataFrame({"Edema": y})
    scores = pd.DataFrame({"Edema": np.linspace(0, 1, 100)})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        row = bootstrap_auroc(labels, scores, n_resamples=400, seed=1).loc["Edema"]
    assert row["shown"] == how and (row["positives"], row["negatives"]) == (positives, 100 - positives)
    assert row["auroc"] == pytest.approx(roc_auc_score(y, scores["Edema"]))
    if positives < CI_MIN_POSITIVES:
        assert math.isnan(row["ci_low"]) and math.isnan(row["ap_high"])
        assert row["note"] == f"no CI: {positives} in the smaller class < {CI_MIN_POSITIVES}"
    else:
        assert row["ci_low"] <= row["auroc"] <= row["ci_high"] and row["ap_low"] <= row["ap"] <= row["ap_high"]


def test_metric_text_shows_counts_and_hides_what_cannot_be_trusted():
    assert metric_text(0.8123, 0.7431, 0.8662, 23, 177, 150) == "0.812 (0.743–0.866) [23+ 177−; 150 pt]"
    assert metric_text(0.64, 0.3, 0.9, 5, 195) == "0.640 few positives [5+ 195−]"
    assert metric_text(0.202, None, None, 1, 199) == "n/a [1+ 199−]"
    assert metric_text(0.9, math.nan, math.nan, 40, 4) == "0.900 few negatives [40+ 4−]"
    assert shown(10, 10) == "with CI" and shown(9, 300) == "few positives" and shown(300, 2) == "n/a"


def test_uncertain_entries_are_left_out():
    labels, scores = study_tables(seed=6, uncertain=0.2)
    changed = scores.copy()
    changed[labels == -1.0] = 99.0  # scores of uncertain studies must not matter
    first = bootstrap_auroc(labels, scores, n_resamples=200)
    second = bootstrap_auroc(labels, changed, n_resamples=200)
    pd.testing.assert_frame_equal(first, second)
    reference = per_observation(labels, scores)
    assert (first["n"] == reference["n"].astype(int)).all()
    assert np.allclose(first["auroc"], reference["auroc"].astype(float))


def test_mean_tasks_with_ci_uses_the_same_resamples():
    labels, scores = study_tables(seed=8)
    out = mean_tasks_with_ci(labels, scores, n_resamples=300, seed=4)
    counts = resample_counts(len(labels), 300, seed=4)
    per_task = []
    for task in COMPETITION_TASKS:
        y, s, keep = certain(labels, scores, task)
        per_task.append(weighted_auroc_ap(y, s, counts[:, keep])[0])
    means = np.mean(per_task, axis=0)
    assert out["mean"] == pytest.approx(
        bootstrap_auroc(labels, scores, 10).loc[list(COMPETITION_TASKS), "auroc"].mean()
    )
    assert out["ci_low"] == pytest.approx(np.quantile(means, 0.025))
    assert out["ci_high"] == pytest.approx(np.quantile(means, 0.975))
    assert out["ci_low"] < out["mean"] < out["ci_high"] and out["dropped"] == 0


def test_scores_are_matched_by_study_not_position():
    labels, scores = study_tables(n=50, seed=9)
    shuffled = scores.sample(frac=1.0, random_state=0)
    pd.testing.assert_frame_equal(bootstrap_auroc(labels, scores, 50), bootstrap_auroc(labels, shuffled, 50))
    with pytest.raises(KeyError):
        bootstrap_auroc(labels, scores.iloc[1:], 50)


def test_write_metrics_nan_as_null(tmp_path):
    labels, scores = study_tables(n=40, seed=10)
    labels["Fracture"] = 0.0
    table = bootstrap_auroc(labels, scores, n_resamples=50)
    summary = {"mean_auroc": mean_tasks_with_ci(labels, scores, n_resamples=50), "undefined": float("nan")}
    json_path, csv_path = write_metrics(table, summary, tmp_path / "run" / "metrics.json")
    text = json_path.read_text()
    assert "NaN" not in text
    payload = json.loads(text)
    assert payload["observations"]["Fracture"]["auroc"] is None
    assert payload["observations"]["Edema"]["auroc"] == pytest.approx(table.loc["Edema", "auroc"])
    assert payload["summary"]["undefined"] is None
    back = pd.read_csv(csv_path, index_col="observation")
    assert list(back.index) == list(OBSERVATIONS) and "ci_low" in back.columns


def test_mean_of_tasks_leaves_out_tasks_below_the_floor_and_says_which():
    labels, scores = study_tables(seed=13)
    labels["Edema"] = 0.0
    labels.loc[labels.index[:4], "Edema"] = 1.0  # 4 positives: below the floor
    out = mean_tasks_with_ci(labels, scores, n_resamples=200, seed=1)
    used = [t for t in COMPETITION_TASKS if t != "Edema"]
    assert out["tasks"] == used and list(out["left_out"]) == ["Edema"]
    assert out["left_out"]["Edema"].startswith("4 positives") and out["label"] == "mean of 4 of 5 tasks"
    table = per_observation(labels, scores)
    assert out["mean"] == pytest.approx(table.loc[used, "auroc"].astype(float).mean())
    only = mean_tasks_with_ci(labels, scores, tasks=["Atelectasis", "Edema"], n_resamples=200, seed=1)
    y, s, _ = certain(labels, scores, "Atelectasis")
    assert only["tasks"] == ["Atelectasis"] and (only["ci_low"], only["ci_high"]) == pytest.approx(
        (auroc_interval(y, s)["ci_low"], auroc_interval(y, s)["ci_high"])
    )
    labels[list(COMPETITION_TASKS)] = 0.0
    none = mean_tasks_with_ci(labels, scores, n_resamples=50)
    assert none["tasks"] == [] and math.isnan(none["mean"]) and len(none["left_out"]) == 5


def test_paired_p_value_is_two_sided_and_pinned_to_the_resampled_deltas():
    labels, scores = study_tables(seed=7)
    rng = np.random.default_rng(3)
    other = pd.DataFrame(
        np.round(scores.to_numpy() + rng.normal(0, 0.3, scores.shape), 1), index=scores.index, columns=scores.columns
    )
    ab = paired_bootstrap(labels, scores, other, "Edema", n_resamples=400, seed=11)
    ba = paired_bootstrap(labels, other, scores, "Edema", n_resamples=400, seed=11)
    assert ab["delta"] == pytest.approx(-ba["delta"]) and ab["p_value"] == pytest.approx(ba["p_value"])
    y, s_a, keep = certain(labels, scores, "Edema")
    counts = resample_counts(len(labels), 400, seed=11)[:, keep]
    deltas = weighted_auroc_ap(y, s_a, counts)[0] - weighted_auroc_ap(y, other["Edema"].to_numpy()[keep], counts)[0]
    expected = 2 * min(np.mean(deltas <= 0), np.mean(deltas >= 0))
    assert 0.05 < expected < 0.95  # a case where one- and two-sided values differ clearly
    assert ab["p_value"] == pytest.approx(max(expected, 1 / 401))


# ---- the printed clustered interval (patients as the unit) ------------------------------------

INTERVAL = __import__("re").compile(r"^(\d\.\d{3}) \((\d\.\d{3})–(\d\.\d{3})\) \[")


def _clustered_data(rng, positive_studies, negative_patients, shift, icc):
    """Study labels and scores: every patient is positive (its studies as in ``positive_studies``) or
    negative (1-3 studies); score = shift * y + patient effect + study noise, total variance 1, share
    ``icc`` from the patient, so a patient's studies are correlated."""
    sizes = list(positive_studies) + list(rng.integers(1, 4, negative_patients))
    patient = np.repeat(np.arange(len(sizes)), sizes)
    y = (patient < len(positive_studies)).astype(float)
    effect = rng.normal(0, math.sqrt(icc), len(sizes))[patient]
    s = shift * y + effect + rng.normal(0, math.sqrt(1 - icc), len(patient))
    index = pd.Index([f"study{i}" for i in range(len(patient))], name="study")
    labels = pd.DataFrame({"Edema": y}, index=index)
    return labels, pd.DataFrame({"Edema": s}, index=index), pd.Series(patient, index=index)


def _printed(labels, scores, groups):
    """The text a report prints for the one observation (bootstrap_auroc's row through metric_text)."""
    row = bootstrap_auroc(labels, scores, n_resamples=2, groups=groups).loc["Edema"]
    return metric_text(
        row["auroc"],
        row["ci_low"],
        row["ci_high"],
        row["positives"],
        row["negatives"],
        row["patients"],
        row["positive_patients"],
        row["negative_patients"],
    )


@pytest.mark.parametrize("truth", [0.75, 0.9])
def test_printed_clustered_interval_covers_and_counts_patients_at_the_floor(truth):
    """Simulated patients with several correlated studies (intraclass correlation 0.6): at the floor
    (10 positive patients of 2-3 studies) the printed "AUROC (low–high)" holds the true AUROC in
    >= 90% of data sets; with 10-14 positive studies of 5-6 patients no interval is printed (the
    study-counted floor printed one there that covered 86-89%). The true AUROC is computed here:
    positives and negatives are different patients, so s+ - s- ~ N(shift, 2) and AUROC = Phi(shift / sqrt 2)."""
    rng = np.random.default_rng(11 if truth == 0.75 else 12)
    shift = math.sqrt(2) * norm.ppf(truth)
    data_sets, covered = 500, []
    for _ in range(data_sets):
        labels, scores, groups = _clustered_data(rng, rng.integers(2, 4, 10), 60, shift, icc=0.6)
        match = INTERVAL.match(_printed(labels, scores, groups))
        assert match, "an interval is printed at 10 positive patients"
        covered.append(float(match[2]) <= truth <= float(match[3]))
    # the printed interval, computed here from its parts: logit(a) -/+ t_{9} se / (a (1 - a)), 9 = positive patients - 1
    y = labels["Edema"].to_numpy() == 1
    auc, cov = delong_cov(y, scores["Edema"].to_numpy()[None], groups.to_numpy())
    a, half = auc[0], t_dist.ppf(0.975, 9) * math.sqrt(cov[0, 0]) / (auc[0] * (1 - auc[0]))
    row = bootstrap_auroc(labels, scores, n_resamples=2, groups=groups).loc["Edema"]
    expit = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
    logit = math.log(a / (1 - a))
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((expit(logit - half), expit(logit + half)))
    rate = float(np.mean(covered))
    mc_se = math.sqrt(0.9 * 0.1 / data_sets)
    print(f"clustered, 10 positive patients, AUROC {truth}: printed-interval coverage {rate:.3f} (MC SE {mc_se:.3f})")
    assert rate >= 0.90 - 2 * mc_se
    assert rate <= 0.99  # not vacuous
    for _ in range(40):  # below the patient floor: 10-14 positive studies of 5-6 patients
        n_patients = int(rng.integers(5, 7))
        extra = int(rng.integers(10, 15)) - n_patients
        sizes = 1 + rng.multinomial(extra, np.full(n_patients, 1 / n_patients))
        labels, scores, groups = _clustered_data(rng, sizes, 60, shift, icc=0.6)
        text = _printed(labels, scores, groups)
        assert not INTERVAL.match(text) and "few positives" in text, text
    row = bootstrap_auroc(labels, scores, n_resamples=2, groups=groups).loc["Edema"]
    assert math.isnan(row["ci_low"]) and "patients in the smaller class" in row["note"]


def test_task_mean_counts_patients_where_patients_are_resampled():
    """A task with 12 positive studies from 4 patients meets the study floor but not the patient floor:
    with groups it is left out of the mean (naming its patients), without groups it is used."""
    rng = np.random.default_rng(4)
    n = 200
    index = pd.Index([f"study{i}" for i in range(n)], name="study")
    labels = pd.DataFrame((rng.random((n, 5)) < 0.3).astype(float), index=index, columns=list(COMPETITION_TASKS))
    labels["Edema"] = 0.0
    labels.iloc[:12, labels.columns.get_loc("Edema")] = 1.0
    scores = labels + rng.normal(0, 1, labels.shape)
    patients = pd.Series([f"p{i // 3}" if i < 12 else f"q{i}" for i in range(n)], index=index)
    plain = mean_tasks_with_ci(labels, scores, n_resamples=50)
    clustered = mean_tasks_with_ci(labels, scores, n_resamples=50, groups=patients)
    assert "Edema" in plain["tasks"] and "Edema" not in clustered["tasks"]
    assert (
        clustered["left_out"]["Edema"]
        == "12 positives, 188 negatives; 4 / 188 patients with a positive / negative study (< 10)"
    )
