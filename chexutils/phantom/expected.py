"""The phantom's expected answer: per observation, which of U-Zeros / U-Ones should score the higher
AUROC against the true findings, derived from the generative model (see docs/statistics.md).

A learner that cannot tell faint from mimic learns, per kind of image (none / equivocal / clear),
the expected training target. The phantom draws a mimic as the finding's own sign at faint strength
(``mimics="faint-sign"``, the default), so no learner can tell them apart; with look-alike mimics
the premise may fail (notebook 07's per-kind scores show it). Scoring each study as that target
plus Gaussian noise of SD ``tau`` (a sharp to a blurry learner) gives each policy's AUROC from the
pair counts of the latent categories; the difference is judged over a range of ``tau`` so that the
verdict does not hinge on one assumed learner.
"""

from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

from chexutils.core.labels import COMPARED_POLICIES, OBSERVATIONS
from chexutils.phantom import label_model as lm

KINDS = ("none", "clear", "faint", "mimic")
POSITIVE_KINDS, NEGATIVE_KINDS = ("clear", "faint"), ("none", "mimic")
NOISE_SDS = (0.05, 0.15, 0.30)  # score noise of the learner: sharp, middling, blurry
MATERIAL = 0.01  # |delta| below this is "no material difference"
LARGE = 0.05  # |delta| at least this at every noise level: a positive control
NULL_MAX = 0.002  # |delta| at most this at every noise level (or identical targets): a null control
NO_DIFFERENCE = "no material difference"
SETTING_DEPENDENT = "setting-dependent"  # sign or size changes with the learner: not a known answer
SHARE_STUDIES = 200_000  # studies sampled (fixed seed) for the category shares after the hierarchy


@dataclass(frozen=True)
class Expected:
    """One observation's derivation: category shares, targets per policy, AUROC difference per noise SD, verdict."""

    shares: dict  # kind -> share of studies (after the hierarchy)
    targets: dict  # policy -> kind -> expected training target
    deltas: dict  # tau -> AUROC(U-Ones) - AUROC(U-Zeros) against the truth
    verdict: str  # "U-Zeros", "U-Ones", NO_DIFFERENCE or SETTING_DEPENDENT
    mechanism: str

    @property
    def prevalence(self) -> float:
        return float(sum(self.shares[k] for k in POSITIVE_KINDS))


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
        out[policy] = {"none": 0.0, "clear": clear, "faint": equivocal, "mimic": equivocal}
    return out


def auroc_from_kinds(shares: dict, targets: dict, tau: float) -> float:
    """AUROC against the truth when each study scores its kind's target plus N(0, tau^2) noise."""
    pos = sum(shares[k] for k in POSITIVE_KINDS)
    neg = sum(shares[k] for k in NEGATIVE_KINDS)
    if pos <= 0 or neg <= 0:
        return float("nan")
    total = sum(
        shares[a] * shares[b] * norm.cdf((targets[a] - targets[b]) / (tau * np.sqrt(2)))
        for a in POSITIVE_KINDS
        for b in NEGATIVE_KINDS
    )
    return float(total / (pos * neg))


def policy_delta(shares: dict, targets: dict, tau: float) -> float:
    """AUROC(U-Ones) - AUROC(U-Zeros) against the truth, for the kinds' ``shares`` and per-policy ``targets``."""
    return auroc_from_kinds(shares, targets["U-Ones"], tau) - auroc_from_kinds(shares, targets["U-Zeros"], tau)


def verdict(deltas) -> str:
    """The expected better policy when every noise level agrees on a material difference, else why not."""
    deltas = np.asarray(list(deltas), float)
    if np.all(np.abs(deltas) < MATERIAL):
        return NO_DIFFERENCE
    if np.all(deltas >= MATERIAL):
        return "U-Ones"
    if np.all(deltas <= -MATERIAL):
        return "U-Zeros"
    return SETTING_DEPENDENT


def _mechanism(targets: dict) -> str:
    zeros, ones = targets["U-Zeros"], targets["U-Ones"]
    if ones["faint"] > ones["clear"]:
        return "inversion under U-Ones: equivocal target above clear positives' (clear positives often blank)"
    if zeros["faint"] < 0.1 * zeros["clear"]:
        return "collapse under U-Zeros: equivocal target near none's (few equivocal studies reported certain)"
    if ones["faint"] == zeros["faint"]:
        return "identical targets"
    return "same ranking under both; finite-learning effect only"


def expected_answer(
    models: dict | None = None, blank: str = "negative", taus=NOISE_SDS, shares: dict | None = None
) -> dict[str, Expected]:
    """The derivation for every observation (No Finding included: it has no uncertain labels).

    ``shares`` (obs -> kind -> share) defaults to a fixed-seed sample of the model after the
    hierarchy (parents gain their children's positives as clear).
    """
    models = lm.observation_models() if models is None else models
    shares = category_shares(models) if shares is None else shares
    out = {}
    for obs in OBSERVATIONS:
        if obs == "No Finding":
            same = {"none": 0.0, "clear": 1.0, "faint": 1.0, "mimic": 0.0}
            targets = {p: dict(same) for p in COMPARED_POLICIES}
        else:
            targets = expected_targets(models[obs], blank)
        deltas = {float(t): policy_delta(shares[obs], targets, t) for t in taus}
        out[obs] = Expected(shares[obs], targets, deltas, verdict(deltas.values()), _mechanism(targets))
    return out


def category_shares(models: dict, n: int = SHARE_STUDIES, seed: int = lm.CALIBRATION_SEED) -> dict:
    """Share of each kind per observation after the hierarchy, from ``n`` studies sampled with a fixed seed."""
    cats, _ = lm.sample_truth(n, models, np.random.default_rng(seed))
    out = {obs: {k: float(np.mean(cat == code)) for code, k in enumerate(lm.CATEGORIES)} for obs, cat in cats.items()}
    healthy = float(np.mean(lm.no_pathology(cats)))
    out["No Finding"] = {"none": 1.0 - healthy, "clear": healthy, "faint": 0.0, "mimic": 0.0}
    return out


def controls(answer: dict[str, Expected]) -> dict:
    """Positive controls (a large effect at every noise level; the primary one has the most power) and
    null controls (identical targets, or |delta| <= NULL_MAX everywhere)."""

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
                "delta_by_noise_sd": {str(t): round(d, 4) for t, d in e.deltas.items()},
                "mechanism": e.mechanism,
            }
            for o, e in answer.items()
        },
        "rule": (
            f"delta = AUROC(U-Ones) - AUROC(U-Zeros) against the truth when a study scores its kind's "
            f"expected training target + N(0, tau^2), tau in {list(NOISE_SDS)}; a policy when every tau "
            f"gives |delta| >= {MATERIAL} with one sign, '{NO_DIFFERENCE}' when every |delta| < {MATERIAL}, "
            f"'{SETTING_DEPENDENT}' otherwise. Positive controls: |delta| >= {LARGE} at every tau; "
            f"null controls: identical targets or |delta| <= {NULL_MAX} at every tau."
        ),
    }
