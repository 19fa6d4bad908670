"""Sample-size arithmetic by hand and the simulated SD against the Mann-Whitney null variance."""

import math

import pytest
from scipy.stats import norm

from chexutils.evaluation import power
from chexutils.phantom import expected as ex

SHARES = {"none": 0.5, "clear": 0.2, "faint": 0.2, "mimic": 0.1}


def test_studies_needed_by_hand():
    z = norm.ppf(1 - 0.05 / 2) + norm.ppf(0.8)  # 1.960 + 0.842
    assert power.studies_needed(0.1, 0.5, n_tests=1) == math.ceil((z * 0.5 / 0.1) ** 2) == 197
    holm14 = norm.ppf(1 - 0.05 / 28) + norm.ppf(0.8)
    assert power.studies_needed(0.1, 0.5, n_tests=14) == math.ceil((holm14 * 0.5 / 0.1) ** 2)
    # seed noise adds 2 * sd^2 / seeds to the variance; too much of it and no study count suffices
    assert power.studies_needed(0.1, 0.5, 1, seed_sd=0.01, seeds=2) == math.ceil(0.25 / ((0.1 / z) ** 2 - 0.0001))
    assert power.studies_needed(0.1, 0.5, 1, seed_sd=0.1, seeds=1) == math.inf


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


def test_power_table_sizes_the_positive_control():
    answer = ex.expected_answer()
    table = power.power_table(answer, seed_sd=0.02, seeds=2)
    assert set(table.index) == {o for o, e in answer.items() if e.verdict in ex.COMPARED_POLICIES}
    row = table.loc["Atelectasis"]
    assert row["planned delta"] == pytest.approx(power.REALISED * min(answer["Atelectasis"].deltas.values()))
    assert row["studies needed"] == power.studies_needed(
        row["planned delta"], row["k = SD x sqrt(studies)"], 14, seed_sd=0.02, seeds=2
    )
    assert row["studies needed"] < 2000
