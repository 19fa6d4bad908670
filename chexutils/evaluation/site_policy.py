"""The per-label U-Zeros / U-Ones comparison repeated at every site, and whether the sites agree.

The arms are learners fitted on one training source (``evaluation/external``: a site or pooled sites)
with each policy and several seeds (``training/pixel_learner``: a seed fits on a random share of the
training patients, so the seed spread stands in for training noise), or finished runs' study scores.
Each evaluation site is then compared exactly as notebook 05 compares on CheXpert:
``policy_choice.compare_arms`` (the seed-aware DeLong test, clustered by patient) and
``policy_choice.choose`` (floors, Holm over the eligible observations, the verdict and the mapping).
``site_agreement`` lines the sites' verdicts up per observation and states how often they agree.
"""

import numpy as np
import pandas as pd

from chexutils.core.labels import COMPETITION_TASKS
from chexutils.evaluation.policy_choice import COMPARED, DELTA, choose, compare_arms, uncertain_share
from chexutils.training.pixel_learner import fit_pixel_learner, study_scores


def fit_policy_arms(
    sites: dict,
    members: list,
    features: dict,
    observations=COMPETITION_TASKS,
    seeds=(0, 1, 2),
    subsample: float = 0.8,
    policies=COMPARED,
) -> dict:
    """policy -> evaluation site -> seed -> study x observation scores, fitted on the pooled training splits of ``members``."""
    frame = pd.concat([sites[m].train for m in members], ignore_index=True)
    x = np.concatenate([features[(m, "train")] for m in members])
    arms = {p: {name: {} for name in sites} for p in policies}
    for policy in policies:
        for seed in seeds:
            learner = fit_pixel_learner(frame, x, policy, observations, seed=seed, subsample=subsample)
            for name, site in sites.items():
                probabilities = learner.predict(features[(name, "evaluation")])
                arms[policy][name][seed] = study_scores(site.evaluation, probabilities)
    return arms


def policy_by_site(
    sites: dict, arms: dict, train_frame: pd.DataFrame, observations=COMPETITION_TASKS, n_resamples: int = 200
) -> dict:
    """Evaluation site -> ``choose``'s table (U-Ones minus U-Zeros per observation, its test, the verdict)."""
    uncertain = uncertain_share(train_frame)
    out = {}
    for name, site in sites.items():
        labels = site.labels[list(observations)]
        comparison = compare_arms(
            labels, arms[COMPARED[0]][name], arms[COMPARED[1]][name], groups=site.patients, n_resamples=n_resamples
        )
        out[name] = choose(comparison, uncertain, criterion=f"{name}: {site.labels_from}")
    return out


def site_agreement(choices: dict) -> tuple[pd.DataFrame, str]:
    """Per observation: each site's Δ (U-Ones minus U-Zeros), its interval and choice; whether the choices and
    the signs of Δ agree. With the sentence that states it (compared = eligible at every site)."""
    names = list(choices)
    table = pd.DataFrame(index=choices[names[0]].index)
    for name in names:
        choice = choices[name]
        table[f"{name} Δ"] = choice.get(DELTA, np.nan)
        table[f"{name} CI"] = [
            f"{lo:+.3f} to {hi:+.3f}" if np.isfinite(lo) else ""
            for lo, hi in zip(choice.get("ci_low", np.nan), choice.get("ci_high", np.nan), strict=True)
        ]
        table[f"{name} verdict"] = choice["verdict"]
        table[f"{name} choice"] = choice["mapping"]
    eligible = np.all([choices[n]["eligible"].to_numpy() for n in names], axis=0)
    same_choice = np.all([table[f"{n} choice"] == table[f"{names[0]} choice"] for n in names], axis=0)
    signs = np.sign(np.vstack([table[f"{n} Δ"].to_numpy(float) for n in names]))
    same_sign = np.all(signs == signs[0], axis=0)
    table["compared at every site"] = eligible
    table["same choice"] = same_choice
    table["same sign of Δ"] = same_sign
    k = int(eligible.sum())
    if k == 0:
        return table, "No observation could be compared at every site (see each site's reasons)."
    decided = [set(choices[n].index[choices[n]["eligible"] & (choices[n]["p_holm"] < 0.05)]) for n in names]
    sentence = (
        f"Of {k} observation(s) compared at every site ({', '.join(names)}), the per-label choice agrees on "
        f"{int(same_choice[eligible].sum())} and the sign of Δ (U-Ones minus U-Zeros) on {int(same_sign[eligible].sum())}; "
        + "; ".join(f"{n} names a better policy for {len(d)}" for n, d in zip(names, decided, strict=True))
        + ". A choice of 'no detectable difference' at one site and a policy at another is a disagreement in power, "
        "not necessarily in direction: read the Δ columns."
    )
    return table, sentence
