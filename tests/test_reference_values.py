"""Reference values for the statistical core, each from an independent computation written here.

DeLong's variance (DeLong, DeLong & Clarke-Pearson 1988, Biometrics 44:837-845) from placement
values counted pair by pair (O(m n), no ranks), and its clustered form summed per patient
(Obuchowski 1997, Biometrics 53:567-578, eqs. 3-5), on data with tied scores and several studies
per patient; the seed-aware test against its formula on a hand case with 2 and 3 seeds; and the
hierarchical bootstrap's seed draws, visible where two seeds of one arm disagree completely.
"""

import math

import numpy as np
import pytest
from scipy.stats import norm
from scipy.stats import t as t_dist
from sklearn.metrics import roc_auc_score

from chexutils.scoring import stats


def psi(x: float, y: float) -> float:
    """Mann-Whitney kernel: 1 if the positive scores above the negative, 1/2 on a tie, else 0."""
    return 1.0 if x > y else 0.5 if x == y else 0.0


def pairwise_components(y, scores):
    """(V10, V01, AUROC) per score row, pair by pair: V10[r][i] = mean_j psi(X_i, Y_j), V01[r][j] = mean_i psi."""
    pos = [i for i, label in enumerate(y) if label]
    neg = [j for j, label in enumerate(y) if not label]
    v10, v01, auc = [], [], []
    for row in scores:
        table = np.array([[psi(row[i], row[j]) for j in neg] for i in pos])  # m x n kernel values
        v10.append(table.mean(axis=1))
        v01.append(table.mean(axis=0))
        auc.append(table.mean())
    return np.array(v10), np.array(v01), np.array(auc)


def reference_delong(y, scores):
    """DeLong 1988: S10/m + S01/n, S = sample covariance (divisor m-1, n-1) of the structural components."""
    v10, v01, auc = pairwise_components(y, scores)
    m, n = v10.shape[1], v01.shape[1]
    k = len(auc)
    s10 = np.array([[np.sum((v10[a] - auc[a]) * (v10[b] - auc[b])) / (m - 1) for b in range(k)] for a in range(k)])
    s01 = np.array([[np.sum((v01[a] - auc[a]) * (v01[b] - auc[b])) / (n - 1) for b in range(k)] for a in range(k)])
    return auc, s10 / m + s01 / n


def reference_obuchowski(y, scores, patients, cross_term: bool = True):
    """Obuchowski 1997: per cluster i, V10_i = sum of its positives' components, V01_i of its negatives';
    with m_i, n_i its positives and negatives and I clusters,
    S10 = I/((I-1) m) sum_i (V10_i - m_i A)(V10_i - m_i A)', S01 likewise over n,
    S11 = I/(I-1) sum_i (V10_i - m_i A)(V01_i - n_i A)', var = S10/m + S01/n + (S11 + S11')/(m n)."""
    v10, v01, auc = pairwise_components(y, scores)
    m, n, k = v10.shape[1], v01.shape[1], len(auc)
    pos = [i for i, label in enumerate(y) if label]
    neg = [j for j, label in enumerate(y) if not label]
    clusters = sorted(set(patients))
    n_clusters = len(clusters)
    d10 = np.zeros((k, n_clusters))
    d01 = np.zeros((k, n_clusters))
    for c, patient in enumerate(clusters):
        own_pos = [col for col, i in enumerate(pos) if patients[i] == patient]
        own_neg = [col for col, j in enumerate(neg) if patients[j] == patient]
        for r in range(k):
            d10[r, c] = sum(v10[r, col] for col in own_pos) - len(own_pos) * auc[r]
            d01[r, c] = sum(v01[r, col] for col in own_neg) - len(own_neg) * auc[r]
    factor = n_clusters / (n_clusters - 1)
    s10 = factor / m * np.einsum("ac,bc->ab", d10, d10)
    s01 = factor / n * np.einsum("ac,bc->ab", d01, d01)
    s11 = factor * np.einsum("ac,bc->ab", d10, d01)
    cov = s10 / m + s01 / n
    return auc, cov + (s11 + s11.T) / (m * n) if cross_term else cov


@pytest.fixture(scope="module")
def clustered_data():
    """70 patients with 1-4 studies each; scores to one decimal (many ties) sharing a patient effect,
    and labels that run in patients, so most patients hold both classes."""
    rng = np.random.default_rng(11)
    patients = np.repeat(np.arange(70), rng.integers(1, 5, 70))
    effect = rng.normal(size=70)[patients]
    y = effect + rng.normal(size=len(patients)) > 0.3
    first = np.round(effect + rng.normal(size=len(patients)) + 0.8 * y, 1)
    second = np.round(0.7 * effect + rng.normal(size=len(patients)) + 1.1 * y, 1)
    return y, np.vstack([first, second]), [f"patient{p:05d}" for p in patients]


def test_the_reference_data_have_ties_several_studies_per_patient_and_a_cross_term(clustered_data):
    y, scores, patients = clustered_data
    assert len(np.unique(scores[0])) < len(scores[0]) / 3  # heavy ties
    assert len(set(patients)) < len(patients) / 2 and 20 <= y.sum() <= len(y) - 20
    with_cross = reference_obuchowski(y, scores, patients)[1]
    without = reference_obuchowski(y, scores, patients, cross_term=False)[1]
    # the cross term matters here (negative: a patient effect raises its positives' placements and
    # lowers its negatives'), far beyond the 1e-10 the comparisons below allow
    assert np.abs(with_cross - without).max() > 0.1 * np.abs(with_cross).max()


def test_unclustered_delong_equals_the_pairwise_reference_with_ties(clustered_data):
    y, scores, _ = clustered_data
    auc, cov = stats.delong_cov(y, scores)
    ref_auc, ref_cov = reference_delong(y, scores)
    np.testing.assert_allclose(auc, ref_auc, rtol=1e-12)
    np.testing.assert_allclose(auc, [roc_auc_score(y, s) for s in scores], rtol=1e-12)
    np.testing.assert_allclose(cov, ref_cov, rtol=1e-10)


def test_clustered_delong_equals_obuchowski_summed_per_patient(clustered_data):
    y, scores, patients = clustered_data
    auc, cov = stats.delong_cov(y, scores, patients)
    ref_auc, ref_cov = reference_obuchowski(y, scores, patients)
    np.testing.assert_allclose(auc, ref_auc, rtol=1e-12)
    np.testing.assert_allclose(cov, ref_cov, rtol=1e-10)  # all of it: variances and the covariance


@pytest.mark.parametrize("clustered", [False, True])
def test_delong_test_is_the_contrast_of_the_reference_covariance(clustered_data, clustered):
    y, scores, patients = clustered_data
    groups = patients if clustered else None
    ref_auc, ref_cov = reference_obuchowski(y, scores, patients) if clustered else reference_delong(y, scores)
    out = stats.delong_test(y, scores[0], scores[1], groups)
    se = math.sqrt(ref_cov[0, 0] + ref_cov[1, 1] - 2 * ref_cov[0, 1])
    z = (ref_auc[1] - ref_auc[0]) / se
    assert out["delta"] == pytest.approx(ref_auc[1] - ref_auc[0], rel=1e-12)
    assert out["se"] == pytest.approx(se, rel=1e-10) and out["z"] == pytest.approx(z, rel=1e-10)
    assert out["p_value"] == pytest.approx(2 * norm.sf(abs(z)), rel=1e-9)


# A hand case: 5 positives and 6 negatives, arm a with 2 seeds, arm b with 3 (scores with ties)
HAND_Y = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0], bool)
HAND_A = np.array(
    [
        [0.9, 0.8, 0.4, 0.6, 0.3, 0.2, 0.5, 0.1, 0.4, 0.3, 0.7],
        [0.7, 0.9, 0.6, 0.2, 0.8, 0.3, 0.1, 0.6, 0.4, 0.5, 0.2],
    ]
)
HAND_B = np.array(
    [
        [0.9, 0.9, 0.7, 0.6, 0.5, 0.1, 0.5, 0.2, 0.3, 0.6, 0.4],
        [0.8, 0.6, 0.9, 0.7, 0.4, 0.2, 0.3, 0.4, 0.1, 0.5, 0.3],
        [0.6, 0.7, 0.5, 0.9, 0.3, 0.4, 0.2, 0.6, 0.3, 0.1, 0.5],
    ]
)


def test_seed_arm_test_variance_is_its_formula_with_unequal_seed_counts():
    out = stats.seed_arm_test(HAND_Y, HAND_A, HAND_B)
    auc_a = np.array([roc_auc_score(HAND_Y, s) for s in HAND_A])
    auc_b = np.array([roc_auc_score(HAND_Y, s) for s in HAND_B])
    assert len(set(auc_a)) == 2 and len(set(auc_b)) == 3  # the seeds differ: a seed variance to pool
    # study part: c' Cov c, c = (-1/2, -1/2, 1/3, 1/3, 1/3), Cov = DeLong over all five runs
    _, cov = reference_delong(HAND_Y, np.vstack([HAND_A, HAND_B]))
    c = np.array([-1 / 2, -1 / 2, 1 / 3, 1 / 3, 1 / 3])
    var_study = c @ cov @ c
    # seed part: pooled s2 on (2 - 1) + (3 - 1) = 3 df, times 1/k_a + 1/k_b = 1/2 + 1/3
    s2 = (1 * np.var(auc_a, ddof=1) + 2 * np.var(auc_b, ddof=1)) / 3
    var_seed = s2 * (1 / 2 + 1 / 3)
    se = math.sqrt(var_study + var_seed)
    df = (var_study + var_seed) ** 2 / (var_seed**2 / 3)  # Satterthwaite, the study part taken as known
    delta = auc_b.mean() - auc_a.mean()
    assert out["delta"] == pytest.approx(delta, rel=1e-12) and out["seed_df"] == 3
    assert out["se_study"] == pytest.approx(math.sqrt(var_study), rel=1e-10)
    assert out["se_seed"] == pytest.approx(math.sqrt(var_seed), rel=1e-10)
    assert out["se"] == pytest.approx(se, rel=1e-10) and out["df"] == pytest.approx(df, rel=1e-10)
    assert out["p_value"] == pytest.approx(2 * t_dist.sf(abs(delta / se), df), rel=1e-9)
    assert (out["mean_a"], out["mean_b"]) == pytest.approx((auc_a.mean(), auc_b.mean()), rel=1e-12)
    assert (out["sd_a"], out["sd_b"]) == pytest.approx((np.std(auc_a, ddof=1), np.std(auc_b, ddof=1)), rel=1e-12)


def test_hierarchical_bootstrap_output_shows_the_resampled_seeds():
    """Arm a: one perfect seed (AUROC 1) and one inverted seed (AUROC 0); arm b: one seed at 0.5.
    With the patients left as they are (every count 1), a replicate is mean(b) - mean(two drawn a
    seeds): 0.5 - 1 (both perfect, 1/4), 0.5 - 0.5 (one of each, 1/2) or 0.5 - 0 (both inverted, 1/4).
    Without the seed draws every replicate would be 0."""
    y = np.array([1, 1, 1, 0, 0, 0], bool)
    perfect = np.array([0.9, 0.8, 0.7, 0.3, 0.2, 0.1])
    runs_a = np.vstack([perfect, 1 - perfect])
    runs_b = np.full((1, 6), 0.5)  # all tied: AUROC 0.5
    counts = np.ones((2000, 6), int)
    deltas = stats.hierarchical_deltas(y, runs_a, runs_b, counts, np.random.default_rng(3))
    values, seen = np.unique(deltas, return_counts=True)
    np.testing.assert_allclose(values, [-0.5, 0.0, 0.5], atol=1e-12)
    shares = seen / len(deltas)
    np.testing.assert_allclose(shares, [0.25, 0.5, 0.25], atol=0.04)  # binomial SD about 0.01
