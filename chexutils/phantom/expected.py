"""The phantom's expected answer: per observation, which of U-Zeros / U-Ones should score the higher
AUROC against the true findings, derived from the generative model (see docs/statistics.md).

A learner that cannot tell faint from mimic learns, per kind of image (none / equivocal / clear),
the expected training target. The phantom draws a mimic as the finding's own sign at faint strength
(``mimics="faint-sign"``, the default), so no learner can tell them apart; with look-alike mimics
the premise may fail (notebook 07's per-kind scores show it). A parent observation that is truly
positive only through a faint child sign is its own kind (``faint via child``): the picture shows the
child's sign, not the parent's.

Each study scores its kind's target plus noise, and each policy's AUROC follows from the pair counts
of the latent kinds. Where the noise is added changes the answer several-fold (and flips the sign of
small effects), so the verdict is taken over a FAMILY of learners (``LEARNERS``): Gaussian noise on the
probability scale (SD 0.05 / 0.15 / 0.30) and on the logit (SD 0.5 / 1 / 2, targets floored at
``TARGET_FLOOR``). A policy is expected only where every learner gives |delta| >= MATERIAL with one
sign; a positive control is one whose SMALLEST effect over the family is large, and sizing
(``evaluation/power.py``) plans for that smallest effect.
"""

from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

from chexutils.core.labels import COMPARED_POLICIES, OBSERVATIONS
from chexutils.phantom import label_model as lm
from chexutils.phantom import measured_noise as mn

VIA_CHILD = "faint via child"  # a parent truly positive only through a faint child sign
KINDS = ("none", "clear", "faint", "mimic", VIA_CHILD)
POSITIVE_KINDS, NEGATIVE_KINDS = ("clear", "faint", VIA_CHILD), ("none", "mimic")
NOISE_SDS = (0.05, 0.15, 0.30)  # score noise of the learner on the probability scale: sharp, middling, blurry
LOGIT_NOISE_SDS = (0.5, 1.0, 2.0)  # score noise of the learner on the logit: sharp, middling, blurry
TARGET_FLOOR = 0.005  # targets are clipped to [floor, 1 - floor] before the logit
SCALES = ("probability", "logit")
MATERIAL = 0.01  # |delta| below this is "no material difference"
LARGE = 0.05  # |delta| at least this at every noise level: a positive control
NULL_MAX = 0.002  # |delta| at most this at every noise level (or identical targets): a null control
NO_DIFFERENCE = "no material difference"
LEARNER_DEPENDENT = "learner-dependent"  # sign or size changes with the learner: not a known answer
SETTING_DEPENDENT = LEARNER_DEPENDENT  # its name before the family of learners
SHARE_STUDIES = 200_000  # studies sampled (fixed seed) for the category shares after the hierarchy


@dataclass(frozen=True)
class Learner:
    """A learner of the family: its score is the kind's target plus N(0, tau^2) on ``scale``."""

    scale: str  # "probability" or "logit"
    tau: float

    @property
    def name(self) -> str:
        return f"{self.scale} {self.tau:g}"


LEARNERS = tuple(Learner("probability", t) for t in NOISE_SDS) + tuple(Learner("logit", t) for t in LOGIT_NOISE_SDS)


def learner(name: str) -> Learner:
    """The learner of LEARNERS called ``name`` ("probability 0.3", "logit 0.5", ...)."""
    for item in LEARNERS:
        if item.name == name:
            return item
    raise ValueError(f"unknown learner {name!r}; known: {', '.join(x.name for x in LEARNERS)}")


def on_scale(value, scale: str = "probability"):
    """A target as the learner sees it: unchanged on the probability scale, its floored logit on the logit."""
    if scale == "probability":
        return value
    if scale == "logit":
        p = np.clip(np.asarray(value, float), TARGET_FLOOR, 1 - TARGET_FLOOR)
        return np.log(p / (1 - p))
    raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")


@dataclass(frozen=True)
class Expected:
    """One observation's derivation: category shares, targets per policy, AUROC difference per noise SD, verdict."""

    shares: dict  # kind -> share of studies (after the hierarchy)
    targets: dict  # policy -> kind -> expected training target
    deltas: dict  # learner name -> AUROC(U-Ones) - AUROC(U-Zeros) against the truth
    verdict: str  # "U-Zeros", "U-Ones", NO_DIFFERENCE or LEARNER_DEPENDENT
    mechanism: str

    @property
    def prevalence(self) -> float:
        return float(sum(self.shares.get(k, 0.0) for k in POSITIVE_KINDS))

    @property
    def smallest(self) -> tuple[str, float]:
        """(learner name, delta) of the smallest |delta| over the family: what a study is sized for."""
        name = min(self.deltas, key=lambda k: abs(self.deltas[k]))
        return name, self.deltas[name]


def expected_targets(
    model: lm.ObservationModel,
    blank: str = "negative",
    uncertain: float = lm.ZONE_UNCERTAIN,
    accuracy: float = lm.ZONE_READER_ACCURACY,
) -> dict:
    """Expected training target per kind under U-Zeros and U-Ones, from the report probabilities.

    Faint and mimic look alike, so both get the equivocal zone's target (their mix is ``model``'s
    faint / mimic rates). With ``blank="ignore"`` blanks leave the loss, so a target is the mean
    over mentioned studies only.
    """
    q = model.faint / (model.faint + model.mimic) if model.faint + model.mimic > 0 else 0.0
    certain_positive = model.zone_certain * (accuracy * q + (1 - accuracy) * (1 - q))
    mentioned_zone = uncertain + model.zone_certain
    out = {}
    for policy, fill in (("U-Zeros", 0.0), ("U-Ones", 1.0)):
        equivocal = certain_positive + fill * uncertain
        if blank == "ignore":
            clear, equivocal = 1.0, equivocal / mentioned_zone
        elif blank == "negative":
            clear = model.mention_clear
        else:
            raise ValueError(f"blank must be 'negative' or 'ignore', got {blank!r}")
        # a parent seen only through a faint child sign: the report names the child, and CheXpert's
        # labeler labels each observation from its own mentions, so the parent is blank (label_model)
        out[policy] = {"none": 0.0, "clear": clear, "faint": equivocal, "mimic": equivocal, VIA_CHILD: 0.0}
    return out


def measured_targets(model: lm.ObservationModel, rates: dict) -> dict:
    """Expected training target per kind when the report label depends on the truth only, drawn from the
    measured ``rates`` (truth 0/1 -> report label -> probability; ``measured_noise.conditional_rates``).

    Blank is negative (as the CheXpert paper trains); faint and mimic look alike, so both get their
    mix's target (q = faint / (faint + mimic))."""
    q = model.faint / (model.faint + model.mimic) if model.faint + model.mimic > 0 else 0.0
    out = {}
    for policy, fill in (("U-Zeros", 0.0), ("U-Ones", 1.0)):
        t1, t0 = (rates[t]["positive"] + fill * rates[t]["uncertain"] for t in (1, 0))
        equivocal = q * t1 + (1 - q) * t0
        out[policy] = {"none": t0, "clear": t1, "faint": equivocal, "mimic": equivocal, VIA_CHILD: t1}
    return out


def auroc_from_kinds(shares: dict, targets: dict, tau: float, scale: str = "probability") -> float:
    """AUROC against the truth when each study scores its kind's target (on ``scale``) plus N(0, tau^2) noise.

    A kind missing from ``shares`` has no studies."""
    pos = sum(shares.get(k, 0.0) for k in POSITIVE_KINDS)
    neg = sum(shares.get(k, 0.0) for k in NEGATIVE_KINDS)
    if pos <= 0 or neg <= 0:
        return float("nan")
    total = sum(
        shares[a]
        * shares[b]
        * norm.cdf((on_scale(targets[a], scale) - on_scale(targets[b], scale)) / (tau * np.sqrt(2)))
        for a in POSITIVE_KINDS
        for b in NEGATIVE_KINDS
        if shares.get(a, 0.0) > 0 and shares.get(b, 0.0) > 0
    )
    return float(total / (pos * neg))


def policy_delta(shares: dict, targets: dict, tau: float, scale: str = "probability") -> float:
    """AUROC(U-Ones) - AUROC(U-Zeros) against the truth, for the kinds' ``shares`` and per-policy ``targets``."""
    return auroc_from_kinds(shares, targets["U-Ones"], tau, scale) - auroc_from_kinds(
        shares, targets["U-Zeros"], tau, scale
    )


def family_deltas(shares: dict, targets: dict, learners=LEARNERS) -> dict:
    """learner name -> AUROC(U-Ones) - AUROC(U-Zeros) for every learner of the family."""
    return {x.name: policy_delta(shares, targets, x.tau, x.scale) for x in learners}


def verdict(deltas) -> str:
    """The expected better policy when every learner agrees on a material difference, else why not."""
    deltas = np.asarray(list(deltas), float)
    if np.all(np.abs(deltas) < MATERIAL):
        return NO_DIFFERENCE
    if np.all(deltas >= MATERIAL):
        return "U-Ones"
    if np.all(deltas <= -MATERIAL):
        return "U-Zeros"
    return LEARNER_DEPENDENT


def _mechanism(targets: dict) -> str:
    zeros, ones = targets["U-Zeros"], targets["U-Ones"]
    if ones["faint"] > ones["clear"]:
        return "inversion under U-Ones: equivocal target above clear positives' (clear positives often blank)"
    if zeros["clear"] <= zeros["none"]:
        return "inversion under U-Zeros: truly positive studies' target at or below none's (rarely reported positive)"
    if zeros["faint"] - zeros["none"] < 0.1 * (zeros["clear"] - zeros["none"]):
        return "collapse under U-Zeros: equivocal target near none's (few equivocal studies reported certain)"
    if ones["faint"] == zeros["faint"]:
        return "identical targets"
    return "same ranking under both; finite-learning effect only"


def expected_answer(
    models: dict | None = None,
    blank: str = "negative",
    learners=LEARNERS,
    shares: dict | None = None,
    label_noise: str = "hand-set",
) -> dict[str, Expected]:
    """The derivation for every observation (No Finding included: it has no uncertain labels).

    ``shares`` (obs -> kind -> share) defaults to a fixed-seed sample of the model after the
    hierarchy (parents gain their children's positives: clear through a clear child, ``faint via
    child`` through faint ones only). ``label_noise``: "hand-set" (the label model's report
    probabilities per kind) or "measured" (report labels drawn given the truth from CheXpert's
    measured rates, ``measured_noise``).
    """
    models = lm.observation_models() if models is None else models
    shares = category_shares(models) if shares is None else shares
    rates = mn.conditional_rates() if label_noise == "measured" else None
    if label_noise not in lm.LABEL_NOISES:
        raise ValueError(f"label_noise must be one of {lm.LABEL_NOISES}, got {label_noise!r}")
    out = {}
    for obs in OBSERVATIONS:
        if obs == "No Finding":
            same = {"none": 0.0, "clear": 1.0, "faint": 1.0, "mimic": 0.0, VIA_CHILD: 1.0}
            targets = {p: dict(same) for p in COMPARED_POLICIES}
        elif rates is not None:
            targets = measured_targets(models[obs], rates[obs])
        else:
            targets = expected_targets(models[obs], blank)
        deltas = family_deltas(shares[obs], targets, learners)
        out[obs] = Expected(shares[obs], targets, deltas, verdict(deltas.values()), _mechanism(targets))
    return out


def category_shares(models: dict, n: int = SHARE_STUDIES, seed: int = lm.CALIBRATION_SEED) -> dict:
    """Share of each kind per observation after the hierarchy, from ``n`` studies sampled with a fixed seed."""
    cats, extra = lm.sample_truth(n, models, np.random.default_rng(seed))
    out = {}
    for obs, cat in cats.items():
        via_child = lm.via_child(cats, extra["own"], obs)
        out[obs] = {k: float(np.mean((cat == code) & ~via_child)) for code, k in enumerate(lm.CATEGORIES)}
        out[obs][VIA_CHILD] = float(np.mean(via_child))
    healthy = float(np.mean(lm.no_pathology(cats)))
    out["No Finding"] = {"none": 1.0 - healthy, "clear": healthy, "faint": 0.0, "mimic": 0.0, VIA_CHILD: 0.0}
    return out


def controls(answer: dict[str, Expected]) -> dict:
    """Positive controls (a large effect for every learner of the family, i.e. a large SMALLEST effect;
    the primary one has the most power for its smallest effect) and null controls (identical targets,
    or |delta| <= NULL_MAX for every learner)."""

    def power_score(e: Expected) -> float:
        p = e.prevalence
        return min(abs(d) for d in e.deltas.values()) * np.sqrt(p * (1 - p))

    large = [
        o
        for o, e in answer.items()
        if e.verdict in COMPARED_POLICIES and min(abs(d) for d in e.deltas.values()) >= LARGE
    ]
    large.sort(key=lambda o: -power_score(answer[o]))
    null = [
        o
        for o, e in answer.items()
        if e.mechanism == "identical targets" or max(abs(d) for d in e.deltas.values()) <= NULL_MAX
    ]
    return {"positive_controls": large, "primary_positive_control": large[0] if large else None, "null_controls": null}


def summary(answer: dict[str, Expected]) -> dict:
    """JSON-ready record of the expected answer for the phantom's sidecar."""
    return {
        "expected_better_policy": {o: e.verdict for o, e in answer.items()},
        **controls(answer),
        "derivation": {
            o: {
                "prevalence": round(e.prevalence, 4),
                "shares": {k: round(v, 4) for k, v in e.shares.items()},
                "targets": {p: {k: round(v, 4) for k, v in t.items()} for p, t in e.targets.items()},
                "delta_by_learner": {name: round(d, 4) for name, d in e.deltas.items()},
                "smallest_effect": {"learner": e.smallest[0], "delta": round(e.smallest[1], 4)},
                "mechanism": e.mechanism,
            }
            for o, e in answer.items()
        },
        "rule": (
            f"delta = AUROC(U-Ones) - AUROC(U-Zeros) against the truth when a study scores its kind's "
            f"expected training target + N(0, tau^2) for a family of learners: noise on the probability "
            f"scale, tau in {list(NOISE_SDS)}, and on the logit (targets clipped to [{TARGET_FLOOR}, "
            f"{1 - TARGET_FLOOR}]), tau in {list(LOGIT_NOISE_SDS)}; a policy when every learner gives "
            f"|delta| >= {MATERIAL} with one sign, '{NO_DIFFERENCE}' when every |delta| < {MATERIAL}, "
            f"'{LEARNER_DEPENDENT}' otherwise. Positive controls: the smallest |delta| over the family is "
            f">= {LARGE}; null controls: identical targets or |delta| <= {NULL_MAX} for every learner."
        ),
    }
