"""Small-sample statistics: DeLong against a hand case, sklearn and a permutation test; clustered
DeLong against the truth; Holm by hand; interval coverage by simulation; the seeds x patients bootstrap."""

import math

import numpy as np
import pytest
from scipy.stats import norm
from scipy.stats import t as t_dist
from sklearn.metrics import roc_auc_score

from chexutils.scoring import stats
from chexutils.scoring.metrics import resample_counts
from chexutils.scoring.stats import weighted_auroc_ap


def test_delong_hand_computed_case():
    # positives 0.9, 0.4; negatives 0.5, 0.2, 0.1. v10 = (1, 2/3), v01 = (1/2, 1, 1): AUROC 5/6,
    # S10 = 1/18, S01 = 1/12, var = S10/2 + S01/3 = 1/18.
    y = np.array([1, 1, 0, 0, 0])
    s_a = np.array([0.9, 0.4, 0.5, 0.2, 0.1])
    v10, v01, auc = stats.placements(y, s_a)
    np.testing.assert_allclose(v10[0], [1, 2 / 3])
    np.testing.assert_allclose(v01[0], [0.5, 1, 1])
    auc, cov = stats.delong_cov(y, s_a)
    assert auc[0] == pytest.approx(5 / 6) and cov[0, 0] == pytest.approx(1 / 18)
    # model b separates perfectly (AUROC 1, zero variance): delta 1/6, se sqrt(1/18), z 0.7071
    s_b = np.array([0.9, 0.6, 0.5, 0.2, 0.1])
    out = stats.delong_test(y, s_a, s_b)
    assert out["delta"] == pytest.approx(1 / 6) and out["se"] == pytest.approx(math.sqrt(1 / 18))
    assert out["p_value"] == pytest.approx(2 * norm.sf((1 / 6) / math.sqrt(1 / 18)))
    assert out["p_value"] == pytest.approx(0.4795, abs=1e-4)


def test_delong_auroc_equals_sklearn_with_ties():
    rng = np.random.default_rng(0)
    y = rng.random(150) < 0.3
    scores = np.round(rng.normal(size=(3, 150)) + y, 1)  # ties
    auc, cov = stats.delong_cov(y, scores)
    np.testing.assert_allclose(auc, [roc_auc_score(y, s) for s in scores], atol=1e-12)
    assert np.allclose(cov, cov.T) and (np.linalg.eigvalsh(cov) > -1e-12).all()


def _permutation_p(y, s_a, s_b, n_perm, rng):
    """Paired permutation test: swap the two models' scores of each study at random (exchangeable under H0)."""
    swap = rng.random((n_perm, len(y))) < 0.5
    perm_a, perm_b = np.where(swap, s_b, s_a), np.where(swap, s_a, s_b)
    observed = stats.placements(y, s_b)[2][0] - stats.placements(y, s_a)[2][0]
    deltas = stats.placements(y, perm_b)[2] - stats.placements(y, perm_a)[2]
    return observed, (1 + np.sum(np.abs(deltas) >= abs(observed) - 1e-12)) / (n_perm + 1)


@pytest.mark.parametrize("effect", [0.0, 0.25, 0.5])
def test_delong_p_agrees_with_a_permutation_test_on_the_same_data(effect):
    rng = np.random.default_rng(int(effect * 100))
    y = rng.random(240) < 0.3
    shared = rng.normal(size=240)  # the two models share most of their signal (paired, correlated)
    s_a = y * 0.8 + shared + 0.6 * rng.normal(size=240)
    s_b = y * (0.8 + effect) + shared + 0.6 * rng.normal(size=240)
    delong = stats.delong_test(y, s_a, s_b)
    observed, p_perm = _permutation_p(y, s_a, s_b, 4000, rng)
    print(f"effect {effect}: delta {observed:.4f}, DeLong p {delong['p_value']:.4f}, permutation p {p_perm:.4f}")
    assert delong["delta"] == pytest.approx(observed)
    assert abs(delong["p_value"] - p_perm) < 0.03 + 0.15 * p_perm


def test_clustered_delong_matches_the_spread_over_data_sets_and_reduces_to_delong():
    rng = np.random.default_rng(5)
    patients = np.repeat(np.arange(100), 3)  # 3 studies per patient sharing a patient effect
    aucs, clustered, naive = [], [], []
    for _ in range(300):
        effect = rng.normal(size=100)[patients]
        y = effect + 0.5 * rng.normal(size=300) > 0.8
        s = effect + rng.normal(size=300) + 0.7 * y
        auc, cov = stats.delong_cov(y, s, patients)
        aucs.append(auc[0])
        clustered.append(math.sqrt(cov[0, 0]))
        naive.append(math.sqrt(stats.delong_cov(y, s)[1][0, 0]))
    spread = np.std(aucs)
    print(f"SD over data sets {spread:.4f}, clustered SE {np.mean(clustered):.4f}, unclustered {np.mean(naive):.4f}")
    assert np.mean(clustered) == pytest.approx(spread, rel=0.12)
    assert np.mean(naive) < np.mean(clustered)  # ignoring the patients understates the noise
    # one study per patient: the clustered call is DeLong's
    y, s = y[:50], s[:50]
    np.testing.assert_allclose(stats.delong_cov(y, s, np.arange(50))[1], stats.delong_cov(y, s)[1])


def test_holm_hand_computed_case():
    # sorted 0.005, 0.01, 0.03, 0.04 (m = 4): 4*0.005 = 0.02, 3*0.01 = 0.03, 2*0.03 = 0.06,
    # 1*0.04 = 0.04 -> cumulative max 0.06. NaN is not a test and stays NaN.
    adjusted = stats.holm([0.01, 0.04, 0.03, 0.005, np.nan])
    np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, 0.02, np.nan])
    assert stats.holm([0.6, 0.5])[0] == 1.0 and stats.holm([]).shape == (0,)


def test_smallest_detectable_difference_factor():
    assert stats.smallest_detectable(1.0) == pytest.approx(1.959964 + 0.841621, abs=1e-5)  # the 2.80 rule
    assert stats.smallest_detectable(0.01, tests=13) == pytest.approx((norm.ppf(1 - 0.05 / 26) + 0.841621) * 0.01)


# Coverage of the printed AUROC interval where metrics prints one (>= 10 in the smaller class).
COVERAGE_GRID = [(a, m, n) for a in (0.6, 0.75, 0.9) for m in (10, 30) for n in (40, 150, 1000)] + [
    (0.95, m, n) for m in (10, 30) for n in (40, 150)
]


def test_interval_coverage_at_the_floor_is_at_least_90_percent():
    results = {cell: stats.coverage(*cell, data_sets=1000, seed=i) for i, cell in enumerate(COVERAGE_GRID)}
    for (a, m, n), value in results.items():
        print(f"AUROC {a:.2f}, {m:2d} positives, {n:4d} negatives: coverage {value:.3f}")
    assert min(results.values()) >= 0.90
    assert max(results.values()) <= 0.995  # not vacuous (an interval of everything would pass the first)


def test_coverage_uses_the_same_interval_as_auroc_interval():
    rng = np.random.default_rng(1)
    y = np.r_[np.ones(12, bool), np.zeros(40, bool)]
    s = rng.normal(size=52) + 1.2 * y
    one = stats.auroc_interval(y, s)
    v10, v01, auc = stats.placements(y, s[None])
    low, high = stats.logit_interval(auc, v10.var(ddof=1) / 12 + v01.var(ddof=1) / 40, 12, 40)
    assert (one["ci_low"], one["ci_high"]) == pytest.approx((low[0], high[0]))
    assert one["ci_low"] < one["auroc"] < one["ci_high"] <= 1.0
    perfect = stats.auroc_interval(y, y.astype(float))
    assert perfect["auroc"] == 1.0 == perfect["ci_high"] and 0.5 < perfect["ci_low"] < 0.99


def test_mean_of_five_tasks_bootstrap_ci_covers_at_the_floor():
    """The 5-task mean's percentile bootstrap, as metrics.mean_tasks_with_ci computes it, 10 positives per task."""
    rng = np.random.default_rng(3)
    truth, n, m, covered = 0.85, 160, 10, []
    shift = stats.binormal_auroc_shift(truth)
    for _ in range(200):
        counts = resample_counts(n, 200, seed=int(rng.integers(1 << 30)))
        means = []
        for _task in range(5):
            y = np.zeros(n, bool)
            y[rng.choice(n, m, replace=False)] = True
            means.append(weighted_auroc_ap(y, rng.normal(size=n) + shift * y, counts)[0])
        means = np.nanmean(np.stack(means), axis=0)
        low, high = np.quantile(means[np.isfinite(means)], [0.025, 0.975])
        covered.append(low <= truth <= high)
    print(f"5-task mean, 10 positives each, AUROC {truth}: coverage {np.mean(covered):.3f}")
    assert np.mean(covered) >= 0.90


def _arms(y, n_seeds, seed_noise, rng, shift_b=0.0):
    base = rng.normal(size=len(y))
    arm = lambda shift: np.stack(
        [
            y * (1.0 + shift) + base + seed_noise * rng.normal(size=len(y))  # noqa: E731
            for _ in range(n_seeds)
        ]
    )
    return arm(0.0), arm(shift_b)


def test_hierarchical_bootstrap_widens_with_seed_noise_and_is_zero_for_identical_arms():
    rng = np.random.default_rng(2)
    y = rng.random(300) < 0.3
    counts = resample_counts(300, 400, seed=1, groups=np.arange(300) // 2)
    widths = []
    for noise in (0.0, 0.5, 1.5):
        runs_a, runs_b = _arms(y, 3, noise, np.random.default_rng(9))
        deltas = stats.hierarchical_deltas(y, runs_a, runs_b, counts, np.random.default_rng(0))
        widths.append(np.subtract(*np.quantile(deltas, [0.975, 0.025])))
    print("CI widths for seed noise 0, 0.5, 1.5:", np.round(widths, 4))
    assert widths[0] < widths[1] < widths[2]
    same = np.tile(y + rng.normal(size=300), (2, 1))
    deltas = stats.hierarchical_deltas(y, same, same, counts, np.random.default_rng(0))
    assert np.all(deltas == 0)


def test_seed_arm_test_adds_seed_noise_and_says_when_it_cannot():
    rng = np.random.default_rng(4)
    y = rng.random(200) < 0.4
    runs_a, runs_b = _arms(y, 3, 0.8, rng, shift_b=0.3)
    out = stats.seed_arm_test(y, runs_a, runs_b)
    aucs_a = [roc_auc_score(y, s) for s in runs_a]
    assert out["mean_a"] == pytest.approx(np.mean(aucs_a)) and out["sd_a"] == pytest.approx(np.std(aucs_a, ddof=1))
    assert out["se_seed"] > 0 and out["se"] == pytest.approx(math.hypot(out["se_study"], out["se_seed"]))
    expected_df = out["se"] ** 4 / (out["se_seed"] ** 4 / 4)  # Satterthwaite, (3 - 1) + (3 - 1) seed df
    assert out["df"] == pytest.approx(expected_df) and out["df"] >= 4
    assert out["p_value"] == pytest.approx(2 * t_dist.sf(abs(out["z"]), expected_df))
    assert out["p_value"] > 2 * norm.sf(abs(out["z"]))  # heavier tails than the normal with few seeds
    single = stats.seed_arm_test(y, runs_a[:1], runs_b[:1])
    assert single["seed_df"] == 0 and single["se_seed"] == 0
    assert single["p_value"] == pytest.approx(stats.delong_test(y, runs_a[0], runs_b[0])["p_value"])
