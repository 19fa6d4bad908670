"""Sample-size arithmetic by hand and the simulated SD against the Mann-Whitney null variance."""

import math

import numpy as np
import pytest
from scipy.stats import norm

from chexutils.evaluation import power
from chexutils.phantom import expected as ex
from chexutils.scoring import stats

SHARES = {"none": 0.5, "clear": 0.2, "faint": 0.2, "mimic": 0.1}


def test_studies_needed_by_hand():
    z = norm.ppf(1 - 0.05 / 2) + norm.ppf(0.8)  # 1.960 + 0.842
    assert power.studies_needed(0.1, 0.5, n_tests=1) == math.ceil((z * 0.5 / 0.1) ** 2) == 197
    holm14 = norm.ppf(1 - 0.05 / 28) + norm.ppf(0.8)
    assert power.studies_needed(0.1, 0.5, n_tests=14) == math.ceil((holm14 * 0.5 / 0.1) ** 2)
    # seed noise the test estimates on 2 (seeds - 1) df: more studies than the normal rule says
    assert power.studies_needed(0.1, 0.5, 1, seed_sd=0.01, seeds=2) > math.ceil(0.25 / ((0.1 / z) ** 2 - 0.0001))
    assert power.studies_needed(0.1, 0.5, 1, seed_sd=0.1, seeds=2) == math.inf  # the seed part alone is too large
    assert power.studies_needed(0.1, 0.5, 1, seed_sd=0.01, seeds=1) == math.inf  # that test leaves seed noise out


def test_simulated_sd_matches_the_mann_whitney_null_variance():
    # equal targets everywhere and independent noise: each AUROC is a null Mann-Whitney statistic,
    # Var = (n1 + n0 + 1) / (12 n1 n0), and the difference of two independent ones has twice that.
    flat = {p: dict.fromkeys(ex.KINDS, 0.3) for p in ex.COMPARED_POLICIES}
    n = 2000
    n1, n0 = 0.4 * n, 0.6 * n
    expected_sd = math.sqrt(2 * (n + 1) / (12 * n1 * n0))
    sd = power.paired_delta_sd(SHARES, flat, noise_sd=0.2, correlation=0.0, n_studies=n, reps=400, seed=1)
    assert sd == pytest.approx(expected_sd, rel=0.12)
    assert power.paired_delta_sd(SHARES, flat, noise_sd=0.2, correlation=1.0, n_studies=n, reps=50) == pytest.approx(
        0, abs=1e-9
    )


def test_power_table_plans_for_the_smallest_effect_with_its_own_learner():
    # a hand-made answer: the smallest |delta| is the sharp logit learner's, so k is simulated with it
    targets = {
        "U-Zeros": {"none": 0.0, "clear": 0.5, "faint": 0.02, "mimic": 0.02},
        "U-Ones": {"none": 0.0, "clear": 0.5, "faint": 0.3, "mimic": 0.3},
    }
    names = [x.name for x in ex.LEARNERS]
    deltas = dict(zip(names, [0.2, 0.2, 0.15, 0.03, 0.08, 0.1]))
    answer = {"Edema": ex.Expected(SHARES, targets, deltas, ex.verdict(deltas.values()), "")}
    row = power.power_table(answer, n_tests=1).loc["Edema"]
    assert row["smallest-effect learner"] == "logit 0.5" and row["modelled delta (smallest)"] == 0.03
    assert row["planned delta"] == pytest.approx(0.03)  # by default the plan is the smallest effect itself
    k_logit = power.paired_delta_sd(SHARES, targets, 0.5, scale="logit") * math.sqrt(2000)
    assert row["k = SD x sqrt(studies)"] == pytest.approx(k_logit)
    k_probability = power.paired_delta_sd(SHARES, targets, 0.3) * math.sqrt(2000)
    assert abs(k_logit - k_probability) > 0.01  # the learner matters to k, not only to the effect
    forced = power.power_table(answer, noise_sd=0.3, n_tests=1).loc["Edema"]  # --noise-sd: probability noise
    assert forced["k = SD x sqrt(studies)"] == pytest.approx(k_probability)


def test_power_table_sizes_the_positive_control():
    # the probability-scale learners alone (where Atelectasis collapses under U-Zeros for every one)
    answer = ex.expected_answer(learners=[x for x in ex.LEARNERS if x.scale == "probability"])
    table = power.power_table(answer, realised=0.5, seed_sd=0.02, seeds=4)  # planning for half the effect
    assert set(table.index) == {o for o, e in answer.items() if e.verdict in ex.COMPARED_POLICIES}
    row = table.loc["Atelectasis"]
    assert row["planned delta"] == pytest.approx(0.5 * min(answer["Atelectasis"].deltas.values()))
    assert row["studies needed"] == power.studies_needed(
        row["planned delta"], row["k = SD x sqrt(studies)"], 14, seed_sd=0.02, seeds=4
    )
    assert row["studies needed"] < 2000
    # the printed study count gives the test actually run 80% power: simulated per-seed AUROCs
    # (seed SD 0.02, 4 per arm, study-level error k / sqrt(n)) through seed_arm_statistic at Holm's alpha / 14
    se_study = row["k = SD x sqrt(studies)"] / math.sqrt(row["studies needed"])
    simulated = _simulated_power(row["planned delta"], se_study, 0.02, 4, 0.05 / 14, 2500, np.random.default_rng(3))
    print(f"Atelectasis: {row['studies needed']} studies, simulated power {simulated:.3f}")
    assert simulated == pytest.approx(0.80, abs=0.04)  # Monte-Carlo SE 0.008
    # with 2 seeds per arm no study count gets there, and the printed text says so and what would
    k, planned = row["k = SD x sqrt(studies)"], row["planned delta"]
    two = table.loc[["Atelectasis"]].assign(
        **{"studies needed": power.studies_needed(planned, k, 14, seed_sd=0.02, seeds=2)}
    )
    assert two.loc["Atelectasis", "studies needed"] == math.inf
    floor, _ = power.best_detectable(two.loc["Atelectasis", "k = SD x sqrt(studies)"], 0.02, 2, 14)
    (line,) = power.seeds_text(two, 0.02, 2, 14)
    assert line.startswith(f"Atelectasis: with 2 seeds per arm no Δ below {floor:.3f} is detectable at 80% power")
    assert line.endswith(f"use 4 seeds per arm ({int(row['studies needed'])} studies)")
    for n in (300, 1000, 3000):  # the 2-seed test falls short at any of these study counts
        short = _simulated_power(
            row["planned delta"],
            row["k = SD x sqrt(studies)"] / math.sqrt(n),
            0.02,
            2,
            0.05 / 14,
            400,
            np.random.default_rng(n),
        )
        assert short < 0.7, (n, short)


def _simulated_power(delta, se_study, seed_sd, k, level_each, reps, rng):
    """Share of simulated studies in which seed_arm_statistic rejects at ``level_each``: k per-seed
    AUROCs per arm (seed SD ``seed_sd``), arm b shifted by ``delta`` plus a study-level error of SD
    ``se_study`` shared by its seeds; the test's study variance is se_study^2, as DeLong supplies it."""
    hits = 0
    for _ in range(reps):
        auc_a = 0.7 + seed_sd * rng.standard_normal(k)
        auc_b = 0.7 + delta + se_study * rng.standard_normal() + seed_sd * rng.standard_normal(k)
        hits += stats.seed_arm_statistic(auc_a, auc_b, se_study**2)["p_value"] < level_each
    return hits / reps


def test_power_table_of_an_answer_without_expected_policies_is_empty_with_its_columns():
    """The hand-set phantom over the learner family has no expected policy: an empty table, same columns."""
    answer = ex.expected_answer()
    none = {o: e for o, e in answer.items() if e.verdict not in ex.COMPARED_POLICIES}
    table = power.power_table(none, seed_sd=0.02, seeds=2)
    assert table.empty and "studies needed" in table.columns
