"""The phantom's label model: rates like the real train.csv, uncertainty planted in the equivocal zone."""

import numpy as np
import pytest

from chexutils.core.labels import HIERARCHY, OBSERVATIONS
from chexutils.data import real_stats
from chexutils.phantom import label_model as lm


@pytest.fixture(scope="module")
def sample():
    models = lm.observation_models()
    rng = np.random.default_rng(7)
    cats, extra = lm.sample_truth(60_000, models, rng)
    reports = lm.sample_reports(cats, models, lm.no_finding_mention_rate(models), rng)
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
