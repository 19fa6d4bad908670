"""Latent truth and radiology-report labels of the phantom CheXpert.

Each study gets, per observation, one latent *category*:

- ``clear``: truly positive with an obvious sign (severity 0.45-1),
- ``faint``: truly positive with a faint sign (severity 0.12-0.3) — the equivocal zone,
- ``mimic``: truly negative, yet showing what a faint sign shows (strength 0.12-0.3) — equivocal too,
- ``none``: truly negative, nothing to see.

Uncertain report labels (-1) come only from the equivocal zone (faint or mimic); with the default
mimics (drawn as the sign itself, see ``render.py``) the pixels cannot tell which it was, as with a
truly equivocal film. The planted
``PLANTED_Q[obs]`` is the probability that an uncertain label is truly positive: above 0.5 for the
observations where the original study found U-Ones best, below 0.5 elsewhere. Some equivocal cases are
still reported as certain (right more often than not, with probability ``ZONE_READER_ACCURACY``),
so certain labels reach into the zone too. Report rates are calibrated so the
positive / negative / uncertain / blank rates per observation follow the real train.csv. A parent
positive only through faint children is blank: the report names the child's equivocal finding, and
CheXpert's labeler labels each observation from its own mentions and propagates nothing up the
hierarchy (stanfordmlgroup/chexpert-labeler, ``stages/aggregate.py`` at 6dd0efa).

``label_noise="measured"``: each study's report label is drawn given its truth (0/1) from CheXpert's
measured P(report label | truth) on the 500 public test studies (``measured_noise``), whatever its kind.

Either way No Finding follows CheXpert's labeler rule: "No Finding" is positive only when no
pathology is labelled positive or uncertain (Support Devices excepted): Irvin et al., AAAI 2019,
arXiv 1901.07031, the labeler's mention-aggregation stage; ``stages/aggregate.py`` above (``category != SUPPORT_DEVICES
and label in [-1, 1]`` means a finding). A No Finding drawn where a pathology is labelled 1 or -1 is blank.
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd

from chexutils.core.labels import HIERARCHY, OBSERVATIONS, PATHOLOGIES
from chexutils.data import real_stats
from chexutils.phantom import measured_noise

CATEGORIES = ("none", "clear", "faint", "mimic")  # coded 0..3 in arrays
NONE, CLEAR, FAINT, MIMIC = range(4)
LABEL_NOISES = ("hand-set", "measured")  # how report labels are drawn given the truth (module docstring)

# P(an uncertain label is truly positive). > 0.5 where the original study's per-label winner was U-Ones. q alone
# does not decide which policy scores the higher AUROC: expected.py derives that from the whole model.
PLANTED_Q: dict[str, float] = {
    "Enlarged Cardiomediastinum": 0.25,
    "Cardiomegaly": 0.20,
    "Lung Opacity": 0.75,
    "Lung Lesion": 0.75,
    "Edema": 0.80,
    "Consolidation": 0.25,
    "Pneumonia": 0.30,
    "Atelectasis": 0.80,
    "Pneumothorax": 0.20,
    "Pleural Effusion": 0.75,
    "Pleural Other": 0.30,
    "Fracture": 0.75,
    "Support Devices": 0.80,
}
ZONE_UNCERTAIN = 0.6  # P(report "uncertain" | equivocal case)
ZONE_CERTAIN_MAX = 0.3  # at most this share of equivocal cases is reported as certain
ZONE_READER_ACCURACY = 0.75  # a certain report in the zone is right this often
UNMENTIONED_CLEAR = 0.15  # share of clear positives the report does not mention (blank)
HEALTHY = 0.15  # studies with no pathology by construction: No Finding ~10% like real after the labeler rule removes
# the healthy studies whose report calls a mimic positive or uncertain (at 0.11 too few were left)
SEVERITY_RANGES = {CLEAR: (0.45, 1.0), FAINT: (0.12, 0.30), MIMIC: (0.12, 0.30)}
CALIBRATION_STUDIES = 200_000
CALIBRATION_SEED = 20190131  # fixed: the report rates are a property of the model, not of a run's seed


@dataclass(frozen=True)
class ObservationModel:
    """Per-observation rates of the phantom: latent category rates and report probabilities."""

    clear: float  # P(clear) among all studies, before the hierarchy adds parents
    faint: float  # P(faint)
    mimic: float  # P(mimic)
    zone_certain: float  # P(certain report | equivocal)
    mention_clear: float  # P(positive report | truly positive, clear)
    mention_none: float  # P(negative report | category none)


def observation_models() -> dict[str, ObservationModel]:
    """Solve the per-observation rates so the phantom's label rates follow the real train.csv."""
    real = real_stats.label_rates()
    base = {}
    for obs in PATHOLOGIES + ("Support Devices",):
        pos, neg, unc = real.loc[obs, ["positive", "negative", "uncertain"]]
        q = PLANTED_Q[obs]
        faint, mimic = q * unc / ZONE_UNCERTAIN, (1 - q) * unc / ZONE_UNCERTAIN
        pos_per, neg_per = _zone_certain_reports(faint, mimic, 1.0)
        zone_certain = min(ZONE_CERTAIN_MAX, 0.5 * pos / pos_per, 0.5 * neg / neg_per if neg > 0 else 0.0)
        zone_pos, zone_neg = _zone_certain_reports(faint, mimic, zone_certain)
        clear = (pos - zone_pos) / (1 - UNMENTIONED_CLEAR)
        base[obs] = dict(
            clear=clear,
            faint=faint,
            mimic=mimic,
            zone_certain=zone_certain,
            zone_pos=zone_pos,
            zone_neg=zone_neg,
            pos=pos,
            neg=neg,
        )
    # Mention rates depend on the truth after the hierarchy (parents gain children's positives):
    # measure it on a large fixed-seed sample, then solve.
    probe = {
        o: ObservationModel(b["clear"], b["faint"], b["mimic"], b["zone_certain"], 1.0, 1.0) for o, b in base.items()
    }
    cats, _ = sample_truth(CALIBRATION_STUDIES, probe, np.random.default_rng(CALIBRATION_SEED))
    models = {}
    for obs, b in base.items():
        share_clear = np.mean(cats[obs] == CLEAR)
        share_none = np.mean(cats[obs] == NONE)
        mention_clear = float(np.clip((b["pos"] - b["zone_pos"]) / max(share_clear, 1e-9), 0, 1))
        mention_none = float(np.clip((b["neg"] - b["zone_neg"]) / max(share_none, 1e-9), 0, 1))
        models[obs] = ObservationModel(
            b["clear"], b["faint"], b["mimic"], b["zone_certain"], mention_clear, mention_none
        )
    return models


def no_finding_mention_rate(models: dict[str, ObservationModel]) -> float:
    """P(report says "No Finding" | truly no pathology and no pathology reported positive or uncertain),
    so No Finding's positive rate is the real one (hand-set noise)."""
    rng = np.random.default_rng(CALIBRATION_SEED)
    cats, extra = sample_truth(CALIBRATION_STUDIES, models, rng)
    eligible = np.mean(sample_reports(cats, models, 1.0, rng, extra["own"])["No Finding"] == 1.0)
    return float(min(1.0, real_stats.label_rates().loc["No Finding", "positive"] / eligible))


def _zone_certain_reports(faint: float, mimic: float, certain: float) -> tuple[float, float]:
    """Expected positive and negative report rates coming from the equivocal zone."""
    acc = ZONE_READER_ACCURACY
    return certain * (acc * faint + (1 - acc) * mimic), certain * ((1 - acc) * faint + acc * mimic)


def sample_truth(n: int, models: dict[str, ObservationModel], rng: np.random.Generator):
    """Latent categories and severities for ``n`` studies: dicts obs -> int array / float array.

    Returns ``(categories, {"severity": ..., "own": ...})``. After the hierarchy a parent with a
    truly positive child is truly positive: if its own draw was negative it becomes ``clear`` when a
    child is clear and ``faint`` when its children are only faint (``via_child``), with the strongest
    child's severity, while ``own`` keeps the parent's own draw (what its own sign shows).
    Mimics are drawn last, among studies still truly negative, so each observation keeps its
    planted faint/mimic mix after the hierarchy.
    """
    healthy = rng.random(n) < HEALTHY
    cats, sev = {}, {}
    for obs, m in models.items():
        scale = 1.0 if obs == "Support Devices" else 1.0 / (1.0 - HEALTHY)
        can_be_positive = np.ones(n, bool) if obs == "Support Devices" else ~healthy
        u = rng.random(n)
        cat = np.full(n, NONE, np.int8)
        cat[can_be_positive & (u < m.clear * scale)] = CLEAR
        cat[can_be_positive & (u >= m.clear * scale) & (u < (m.clear + m.faint) * scale)] = FAINT
        cats[obs] = cat
    own = {obs: cats[obs].copy() for obs in cats}
    gained = {}
    for parent, children in HIERARCHY.items():
        child_positive, child_clear = np.zeros(n, bool), np.zeros(n, bool)
        for child in children:
            child_positive |= np.isin(cats[child], (CLEAR, FAINT))
            child_clear |= cats[child] == CLEAR
        gained[parent] = child_positive & (cats[parent] == NONE)
        cats[parent][gained[parent]] = np.where(child_clear[gained[parent]], CLEAR, FAINT)
    for obs, m in models.items():
        negative = cats[obs] == NONE
        p_mimic = min(1.0, m.mimic / max(negative.mean(), 1e-9))
        cats[obs][negative & (rng.random(n) < p_mimic)] = MIMIC
        own[obs][cats[obs] == MIMIC] = MIMIC
        sev[obs] = _severity(cats[obs], rng)
    for parent, children in HIERARCHY.items():
        child_sev = np.max([np.where(np.isin(cats[c], (CLEAR, FAINT)), sev[c], 0.0) for c in children], axis=0)
        sev[parent][gained[parent]] = child_sev[gained[parent]]
    return cats, {"severity": sev, "own": own}


def _severity(cat: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    sev = np.zeros(len(cat))
    for code, (lo, hi) in SEVERITY_RANGES.items():
        mask = cat == code
        sev[mask] = rng.uniform(lo, hi, mask.sum())
    return sev


def via_child(cats: dict[str, np.ndarray], own: dict[str, np.ndarray], obs: str) -> np.ndarray:
    """True where ``obs`` is a parent truly positive only through faint child signs (its own draw was none)."""
    if obs not in HIERARCHY:
        return np.zeros(len(cats[obs]), bool)
    return (cats[obs] == FAINT) & (own[obs] == NONE)


def no_pathology(cats: dict[str, np.ndarray]) -> np.ndarray:
    """True where no pathology is truly present (support devices allowed): the truth of No Finding."""
    any_path = np.zeros(len(next(iter(cats.values()))), bool)
    for obs in PATHOLOGIES:
        any_path |= np.isin(cats[obs], (CLEAR, FAINT))
    return ~any_path


def sample_reports(
    cats: dict[str, np.ndarray],
    models: dict[str, ObservationModel],
    no_finding_rate: float,
    rng: np.random.Generator,
    own: dict[str, np.ndarray],
    label_noise: str = "hand-set",
    rates: dict | None = None,
) -> pd.DataFrame:
    """Report labels (1.0 / 0.0 / -1.0 / NaN) per study and observation, from the latent categories.

    ``own``: ``sample_truth``'s own draws (a parent positive only through faint children is blank).
    ``label_noise="measured"`` draws each label given the truth from ``rates`` (obs -> truth 0/1 ->
    label -> probability; default ``measured_noise.conditional_rates()``). No Finding follows the
    labeler's rule (module docstring) in both.
    """
    if label_noise not in LABEL_NOISES:
        raise ValueError(f"label_noise must be one of {LABEL_NOISES}, got {label_noise!r}")
    if label_noise == "measured" and rates is None:
        rates = measured_noise.conditional_rates()
    n = len(next(iter(cats.values())))
    out = {}
    for obs in OBSERVATIONS[1:]:
        if label_noise == "measured":
            out[obs] = _measured_labels(np.isin(cats[obs], (CLEAR, FAINT)), rates[obs], rng)
            continue
        label = np.full(n, np.nan)
        u = rng.random(n)
        m, cat = models[obs], cats[obs]
        label[(cat == CLEAR) & (u < m.mention_clear)] = 1.0
        label[(cat == NONE) & (u < m.mention_none)] = 0.0
        zone = np.isin(cat, (FAINT, MIMIC)) & ~via_child(cats, own, obs)  # via a faint child: blank
        label[zone & (u < ZONE_UNCERTAIN)] = -1.0
        certain = zone & (u >= ZONE_UNCERTAIN) & (u < ZONE_UNCERTAIN + m.zone_certain)
        right = rng.random(n) < ZONE_READER_ACCURACY
        says_positive = np.where(cat == FAINT, right, ~right)
        label[certain & says_positive] = 1.0
        label[certain & ~says_positive] = 0.0
        out[obs] = label
    healthy = no_pathology(cats)
    if label_noise == "measured":
        no_finding = _measured_labels(healthy, rates["No Finding"], rng)
    else:
        no_finding = np.where(healthy & (rng.random(n) < no_finding_rate), 1.0, np.nan)
    no_finding[reported_finding(out)] = np.nan  # the labeler's rule: a finding reported, so not No Finding
    out["No Finding"] = no_finding
    return pd.DataFrame(out)[list(OBSERVATIONS)]


def reported_finding(reports) -> np.ndarray:
    """True where some pathology (Support Devices excepted) is labelled positive or uncertain."""
    return np.any([np.isin(np.asarray(reports[o], float), (1.0, -1.0)) for o in PATHOLOGIES], axis=0)


_REPORT_VALUES = np.array([measured_noise.LABEL_VALUES[k] for k in measured_noise.REPORT_LABELS])


def _measured_labels(truth: np.ndarray, rates: dict, rng: np.random.Generator) -> np.ndarray:
    """A report label per study, drawn given its truth (True / False) from ``rates[1 | 0][label]``."""
    label = np.full(len(truth), np.nan)
    u = rng.random(len(truth))
    for value, mask in ((1, truth), (0, ~truth)):
        edges = np.cumsum([rates[value][k] for k in measured_noise.REPORT_LABELS])
        drawn = np.minimum(np.searchsorted(edges, u[mask], side="right"), len(_REPORT_VALUES) - 1)
        label[mask] = _REPORT_VALUES[drawn]
    return label


def truth_labels(cats: dict[str, np.ndarray]) -> pd.DataFrame:
    """The true findings as 0/1 per observation (valid.csv's labels, the sidecar's truth)."""
    out = {"No Finding": no_pathology(cats).astype(float)}
    for obs in OBSERVATIONS[1:]:
        out[obs] = np.isin(cats[obs], (CLEAR, FAINT)).astype(float)
    return pd.DataFrame(out)[list(OBSERVATIONS)]
