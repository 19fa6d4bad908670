"""The phantom's label model: rates like the real train.csv, uncertainty planted in the equivocal zone."""

import numpy as np
import pytest
from scipy.stats import norm

from chexutils.core.labels import HIERARCHY, OBSERVATIONS, PATHOLOGIES
from chexutils.data import real_stats
from chexutils.phantom import label_model as lm
from chexutils.phantom import measured_noise as mn


@pytest.fixture(scope="module")
def sample():
    models = lm.observation_models()
    rng = np.random.default_rng(7)
    cats, extra = lm.sample_truth(60_000, models, rng)
    reports = lm.sample_reports(cats, models, lm.no_finding_mention_rate(models), rng, extra["own"])
    return cats, extra, reports


@pytest.mark.parametrize("kind, value", [("positive", 1.0), ("negative", 0.0), ("uncertain", -1.0)])
def test_label_rates_follow_the_real_train_csv(sample, kind, value):
    _, _, reports = sample
    real = real_stats.label_rates()[kind]
    measured = (reports[list(OBSERVATIONS)] == value).mean()
    gap = (measured - real).abs()
    # sampling error of a rate over 60,000 draws; 4 SE (measured: at most 2.9 SE over the 42 rates)
    se = np.sqrt(real * (1 - real) / len(reports)).clip(lower=1 / len(reports))
    assert (gap <= 4 * se).all(), (gap / se).sort_values().tail(3)


def test_uncertain_labels_come_only_from_the_equivocal_zone(sample):
    cats, _, reports = sample
    for obs in lm.PLANTED_Q:
        uncertain = reports[obs].to_numpy() == -1.0
        assert np.isin(cats[obs][uncertain], (lm.FAINT, lm.MIMIC)).all()


@pytest.mark.parametrize("obs", sorted(lm.PLANTED_Q))
def test_planted_q_is_the_share_of_uncertain_labels_truly_positive(sample, obs):
    cats, _, reports = sample
    uncertain = reports[obs].to_numpy() == -1.0
    truly_positive = np.isin(cats[obs][uncertain], (lm.CLEAR, lm.FAINT)).mean()
    q = lm.PLANTED_Q[obs]
    se = np.sqrt(q * (1 - q) / uncertain.sum())  # a share over the uncertain labels drawn (172 to 9,154)
    assert abs(truly_positive - q) < 4 * se  # measured: at most 1.8 SE


def test_planted_q_sides_match_the_seeds_per_label_winners():
    ones = {"Atelectasis", "Edema", "Pleural Effusion", "Lung Opacity", "Lung Lesion", "Fracture", "Support Devices"}
    for obs, q in lm.PLANTED_Q.items():
        assert (q >= 0.7) if obs in ones else (q <= 0.3), obs


def test_certain_labels_also_reach_into_the_zone(sample):
    cats, _, reports = sample
    zone = np.isin(cats["Edema"], (lm.FAINT, lm.MIMIC))
    assert np.isin(reports["Edema"].to_numpy()[zone], (0.0, 1.0)).mean() > 0.1


def test_hierarchy_and_no_finding_hold_in_the_truth(sample):
    cats, _, _ = sample
    truth = lm.truth_labels(cats)
    for parent, children in HIERARCHY.items():
        for child in children:
            assert (truth[parent][truth[child] == 1] == 1).all()
    pathology = truth.drop(columns=["No Finding", "Support Devices"]).max(axis=1)
    assert ((truth["No Finding"] == 1) == (pathology == 0)).all()


def test_severities_separate_clear_faint_and_mimic(sample):
    cats, extra, _ = sample
    sev = extra["severity"]["Pleural Effusion"]
    own = extra["own"]["Pleural Effusion"]
    assert sev[own == lm.CLEAR].min() >= 0.45
    assert sev[cats["Pleural Effusion"] == lm.FAINT].max() <= 0.3
    assert sev[cats["Pleural Effusion"] == lm.NONE].max() == 0


@pytest.mark.parametrize("parent", sorted(HIERARCHY))
def test_a_parent_resting_on_faint_children_only_is_faint_and_unreported(sample, parent):
    cats, extra, reports = sample
    own = extra["own"][parent]
    children = HIERARCHY[parent]
    child_clear = np.any([cats[c] == lm.CLEAR for c in children], axis=0)
    child_faint = np.any([cats[c] == lm.FAINT for c in children], axis=0)
    gained = (own == lm.NONE) & (child_clear | child_faint)
    assert gained.sum() > 100
    # its kind follows the strongest child sign, and its severity is that sign's
    assert (cats[parent][gained & child_clear] == lm.CLEAR).all()
    assert (cats[parent][gained & ~child_clear] == lm.FAINT).all()
    assert (extra["severity"][parent][cats[parent] == lm.CLEAR] >= lm.SEVERITY_RANGES[lm.CLEAR][0]).all()
    assert (lm.via_child(cats, extra["own"], parent) == (gained & ~child_clear)).all()
    # the report names the child's equivocal finding, not the parent (the labeler does not propagate)
    assert reports[parent][gained & ~child_clear].isna().all()


def test_no_finding_is_never_reported_beside_a_reported_pathology(sample):
    _, _, reports = sample
    finding = (reports[list(PATHOLOGIES)].isin([1.0, -1.0])).any(axis=1)
    assert reports["No Finding"].isin([1.0]).sum() > 1000
    assert not (finding & (reports["No Finding"] == 1.0)).any()
    assert lm.reported_finding(reports).tolist() == finding.tolist()
    # Support Devices do not count as a finding
    devices_only = (reports["Support Devices"] == 1.0) & ~finding
    assert (reports["No Finding"][devices_only] == 1.0).any()


@pytest.fixture(scope="module")
def measured_sample():
    models = lm.observation_models()
    rng = np.random.default_rng(11)
    cats, extra = lm.sample_truth(40_000, models, rng)
    return cats, lm.sample_reports(cats, models, 1.0, rng, extra["own"], label_noise="measured")


def test_measured_noise_phantom_report_rates_match_the_shipped_table(measured_sample):
    """P(report label | truth) of a measured-noise phantom equals the shipped counts' rates within sampling error."""
    cats, reports = measured_sample
    truth = lm.truth_labels(cats)
    rates = mn.conditional_rates()
    z_scores = []
    for obs in OBSERVATIONS[1:]:  # No Finding is cut by the labeler's rule (tested above)
        for value in (1, 0):
            labels = reports[obs][truth[obs] == value]
            for label in mn.REPORT_LABELS:
                p, n = rates[obs][value][label], len(labels)
                hits = int(labels.isna().sum()) if label == "blank" else int((labels == mn.LABEL_VALUES[label]).sum())
                if p == 0.0 or p == 1.0:
                    assert hits == p * n, (obs, value, label)  # an unseen label is never drawn
                    continue
                z_scores.append((hits - n * p) / np.sqrt(n * p * (1 - p)))
    z_scores = np.abs(z_scores)
    # 4.5 SE over ~100 rates: a false alarm has probability about 100 x 7e-6
    assert len(z_scores) > 80 and z_scores.max() < 4.5, z_scores.max()
    assert (z_scores < norm.ppf(0.975)).mean() > 0.85  # about 95% within 1.96 SE


def test_measured_noise_keeps_the_labeler_rule_and_rejects_unknown_noise(measured_sample):
    cats, reports = measured_sample
    assert not (lm.reported_finding(reports) & (reports["No Finding"] == 1.0)).any()
    assert (reports["No Finding"] == 1.0).any()
    with pytest.raises(ValueError, match="label_noise"):
        lm.sample_reports(cats, lm.observation_models(), 1.0, np.random.default_rng(0), {}, label_noise="real")
