"""Beyond one hospital: a model trained at one site, evaluated at another (issue 24).

A *site* is a registered data set (``data/datasets``) read from a root: its training split and its
evaluation split (``DatasetSpec.evaluation_split``: CheXpert's radiologist-labelled valid, MIMIC-CXR-JPG's
official test), scored at study level (max over a study's images). On a phantom the evaluation labels
are the planted truth (its sidecar); on real data the data set's own labels, uncertain left out.

- ``evaluate_run_on``: any finished run on any data set's evaluation split, with the counts and the
  patient-resampled CIs of ``evaluate.score_run`` (run-folder files ``*_external_<dataset>``).
- ``fit_sources`` / ``cross_site``: the "trained on x evaluated on" grid. A source is a list of sites
  whose training splits are pooled (patients are never shared: ``check_patients`` refuses a patient in
  two sites or in a site's training and evaluation splits). The learner is ``training/pixel_learner``
  (cheap enough to fit the grid on 2 CPU cores); a run's scores can stand in for a cell.
- ``drops``: per evaluation site and source, the gap to the site's own (local) model on the SAME
  studies, with a paired DeLong interval clustered by patient (``scoring.stats.delong_test``), and the
  transport drop of each single-site source from its home site (different studies: the variances add).
  Intervals follow the floors of ``scoring.metrics.shown`` (no CI below 10 in the smaller class,
  counted in patients; "n/a" below 3).
"""

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import norm

from chexutils.core.errors import DataError
from chexutils.core.labels import COMPETITION_TASKS, OBSERVATIONS
from chexutils.core.rundir import external_set
from chexutils.data.datasets import get_dataset, read_dataset
from chexutils.data.demographics import add_demographics
from chexutils.evaluation.evaluate import evaluate_set
from chexutils.phantom.second_site import PATIENTS_CSV
from chexutils.phantom.sidecar import TRUTH_JSON, read_truth
from chexutils.scoring.metrics import metric_text, shown
from chexutils.scoring.stats import auroc_influence, auroc_interval, cluster_counts, delong_test
from chexutils.training.pixel_learner import fit_pixel_learner, pixel_features, study_scores

LEVEL = 0.95


@dataclass
class Site:
    """One hospital: its training images, evaluation images, and study-level evaluation labels and patients."""

    name: str
    dataset: str
    root: Path
    train: pd.DataFrame
    evaluation: pd.DataFrame
    labels: pd.DataFrame  # study x observation, 1 / 0 / NaN (NaN: not scored)
    patients: pd.Series  # study -> patient
    labels_from: str  # "phantom truth" or the data set's labels


def _truth_folder(root: Path) -> Path | None:
    for folder in (root, *sorted(root.glob("CheXpert-v1.0*"))):
        if (folder / TRUTH_JSON).is_file():
            return folder
    return None


def load_site(name: str, dataset: str, root, views=None, patients_csv=None) -> Site:
    """Read a site; ``patients_csv`` (MIMIC-IV's patients file) adds Sex / Age where the CSVs lack them."""
    spec = get_dataset(dataset)
    root = Path(root)
    train = read_dataset(dataset, root, split=spec.train_split, views=views)
    evaluation = read_dataset(dataset, root, split=spec.evaluation_split, views=views)
    patients_csv = patients_csv or (root / PATIENTS_CSV if (root / PATIENTS_CSV).is_file() else None)
    if patients_csv is not None and "subject_id" in evaluation:
        train, evaluation = add_demographics(train, patients_csv), add_demographics(evaluation, patients_csv)
    check_patients({f"{name} {spec.train_split}": train, f"{name} {spec.evaluation_split}": evaluation})
    first = evaluation.drop_duplicates("study").set_index("study")
    labels = first[list(OBSERVATIONS)].where(first[list(OBSERVATIONS)].isin((0.0, 1.0)))
    labels_from = f"{dataset} labels (uncertain left out)"
    folder = _truth_folder(root)
    if folder is not None:
        truth = read_truth(folder).findings
        missing = labels.index.difference(truth.index)
        if len(missing):
            raise DataError(f"{folder / TRUTH_JSON}: no truth for {len(missing)} studies (first {missing[0]!r})")
        labels, labels_from = truth.loc[labels.index, list(OBSERVATIONS)].astype(float), "phantom truth"
    return Site(name, dataset, root, train, evaluation, labels, first["patient"], labels_from)


def check_patients(frames: dict) -> None:
    """A DataError when a patient appears in two of the named frames (sites, or a site's splits)."""
    seen = {}
    for what, frame in frames.items():
        for patient in pd.unique(frame["patient"]):
            if patient in seen and seen[patient] != what:
                raise DataError(
                    f"patient {patient!r} is in {seen[patient]} and in {what}; expected patients never shared "
                    "between sites or between training and evaluation"
                )
            seen.setdefault(patient, what)


def evaluate_run_on(
    run_dir, dataset: str, root=None, views=None, n_resamples: int = 1000, seed: int = 0, predict: bool = True
):
    """Predict (unless ``predict`` is False and the predictions exist), score and write a finished run on
    ``dataset``'s evaluation split: (RunScores, table, summary); files ``*_external_<dataset>`` in the run folder."""
    spec = get_dataset(dataset)
    frame = read_dataset(dataset, root, split=spec.evaluation_split, views=views)
    run, table, summary = evaluate_set(run_dir, frame, external_set(dataset), n_resamples, seed, predict=predict)
    summary["dataset"], summary["split"] = dataset, spec.evaluation_split
    return run, table, summary


def site_features(sites: dict, size: int) -> dict:
    """(site, "train" | "evaluation") -> pixel features, read once."""
    return {
        (name, part): pixel_features(getattr(site, part), size)
        for name, site in sites.items()
        for part in ("train", "evaluation")
    }


def fit_sources(
    sites: dict,
    sources: dict,
    features: dict,
    policy: str = "U-Zeros",
    observations=COMPETITION_TASKS,
    seed: int = 0,
    subsample: float = 1.0,
) -> dict:
    """(source, evaluation site) -> study x observation scores of a learner fitted on the source's pooled training splits."""
    check_patients({f"{n} (all splits)": pd.concat([s.train, s.evaluation]) for n, s in sites.items()})
    scores = {}
    for source, members in sources.items():
        frame = pd.concat([sites[m].train for m in members], ignore_index=True)
        x = np.concatenate([features[(m, "train")] for m in members])
        learner = fit_pixel_learner(frame, x, policy, observations, seed=seed, subsample=subsample)
        for name, site in sites.items():
            scores[(source, name)] = study_scores(site.evaluation, learner.predict(features[(name, "evaluation")]))
    return scores


def _scored(site: Site, obs: str, *score_frames):
    y = site.labels[obs]
    keep = y.notna().to_numpy().copy()
    for frame in score_frames:
        keep &= np.isfinite(frame.loc[site.labels.index, obs].to_numpy(float))
    index = site.labels.index[keep]
    arrays = [frame.loc[index, obs].to_numpy(float) for frame in score_frames]
    return y[keep].to_numpy(bool), site.patients.loc[index].to_numpy(), arrays, index


def cross_site(scores: dict, sites: dict, observations=COMPETITION_TASKS) -> pd.DataFrame:
    """One row per (trained on, evaluated on, observation): AUROC, clustered DeLong logit CI, counts, text."""
    rows = []
    for (source, name), frame in scores.items():
        site = sites[name]
        for obs in observations:
            y, groups, (s,), _ = _scored(site, obs, frame)
            m, n = int(y.sum()), int((~y).sum())
            pos_pt, neg_pt = cluster_counts(y, groups) if len(y) else (0, 0)
            row = {"trained on": source, "evaluated on": name, "observation": obs, "positives": m, "negatives": n,
                   "positive patients": pos_pt, "negative patients": neg_pt, "labels": site.labels_from}  # fmt: skip
            how = shown(m, n, pos_pt, neg_pt)
            auc = low = high = se = math.nan
            if min(m, n) >= 1:
                ci = auroc_interval(y, s, groups, LEVEL)
                se = ci["se"]
                auc = ci["auroc"] if how != "n/a" else math.nan
                low, high = (ci["ci_low"], ci["ci_high"]) if how == "with CI" else (math.nan, math.nan)
            rows.append(row | {"auroc": auc, "ci_low": low, "ci_high": high, "se": se, "shown": how,
                               "text": metric_text(auc, low, high, m, n, len(set(groups)), pos_pt, neg_pt)})  # fmt: skip
    return pd.DataFrame(rows)


def grid(table: pd.DataFrame, value: str = "auroc") -> pd.DataFrame:
    """Trained on x evaluated on: the mean over observations of ``value`` (NaN where any is undefined)."""
    mean = table.groupby(["trained on", "evaluated on"], sort=False)[value].agg(lambda v: v.mean(skipna=False))
    return mean.unstack("evaluated on")


def _delta_row(delta: float, se: float, counts: tuple) -> dict:
    m, n, pos_pt, neg_pt = counts
    how = shown(m, n, pos_pt, neg_pt)
    z = norm.ppf((1 + LEVEL) / 2)
    with_ci = how == "with CI" and np.isfinite(se)
    p = float(2 * norm.sf(abs(delta / se))) if with_ci and se > 0 else math.nan
    return {"delta": delta if how != "n/a" else math.nan, "ci_low": delta - z * se if with_ci else math.nan,
            "ci_high": delta + z * se if with_ci else math.nan, "se": se, "p_value": p, "shown": how}  # fmt: skip


def paired_gap(site: Site, local: pd.DataFrame, other: pd.DataFrame, observations) -> list[dict]:
    """Per observation and for their mean: AUROC(other) - AUROC(local) on the same studies, clustered paired DeLong.

    The mean's variance sums each patient's influence on every observation's difference (``stats.auroc_influence``),
    so the correlation between observations of one patient is kept; its floor is the smallest observation's.
    """
    rows, psi_sum = [], 0.0
    codes = pd.Series(pd.factorize(site.patients.loc[site.labels.index].to_numpy())[0], index=site.labels.index)
    n_clusters = int(codes.max()) + 1 if len(codes) else 0
    for obs in observations:
        y, groups, (a, b), index = _scored(site, obs, local, other)
        counts = (int(y.sum()), int((~y).sum()), *(cluster_counts(y, groups) if len(y) else (0, 0)))
        row = {"observation": obs, "positives": counts[0], "negatives": counts[1],
               "positive patients": counts[2], "negative patients": counts[3]}  # fmt: skip
        if min(counts[:2]) < 1:
            rows.append(row | {"delta": math.nan, "shown": "n/a"})
            continue
        test = delong_test(y, a, b, groups)
        rows.append(row | _delta_row(test["delta"], test["se"], counts))
        _, psi = auroc_influence(y, np.vstack([a, b]), codes.loc[index].to_numpy(), n_clusters)
        psi_sum = psi_sum + psi[1] - psi[0]
    if rows and all(np.isfinite(r["delta"]) for r in rows):
        k = len(rows)
        var = n_clusters / max(n_clusters - 1, 1) * float(np.sum((np.asarray(psi_sum) / k) ** 2))
        floor = min(rows, key=lambda r: min(r["positive patients"], r["negative patients"]))
        counts = tuple(floor[c] for c in ("positives", "negatives", "positive patients", "negative patients"))
        delta = float(np.mean([r["delta"] for r in rows]))
        rows.append({"observation": "mean"} | _delta_row(delta, math.sqrt(var), counts))
    return rows


def drops(scores: dict, sites: dict, sources: dict, observations=COMPETITION_TASKS) -> pd.DataFrame:
    """Paired gaps to each evaluation site's local model (the source made of that site alone) on the same studies."""
    local = {members[0]: source for source, members in sources.items() if len(members) == 1}
    rows = []
    for name, site in sites.items():
        if name not in local:
            continue
        for source in sources:
            if source == local[name]:
                continue
            for row in paired_gap(site, scores[(local[name], name)], scores[(source, name)], observations):
                rows.append({"evaluated on": name, "trained on": source, "compared with": local[name], **row})
    return pd.DataFrame(rows)


def transport_drop(table: pd.DataFrame, sources: dict) -> pd.DataFrame:
    """Per single-site source and observation: AUROC at home minus AUROC at each other site.

    Different studies and patients at the two sites, so the variances add: SE = hypot of the two clustered
    DeLong SEs (``cross_site``'s ``se``), a normal interval; none unless both cells are shown with a CI.
    """
    rows = []
    z = norm.ppf((1 + LEVEL) / 2)
    for source, members in sources.items():
        if len(members) != 1:
            continue
        mine = table[table["trained on"] == source].set_index(["evaluated on", "observation"])
        for (name, obs), row in mine.iterrows():
            if name == members[0]:
                continue
            home = mine.loc[(members[0], obs)]
            delta = float(home["auroc"] - row["auroc"])
            se = math.hypot(home["se"], row["se"])
            with_ci = home["shown"] == "with CI" and row["shown"] == "with CI"
            rows.append({"trained on": source, "home": members[0], "evaluated on": name, "observation": obs,
                         "drop": delta, "se": se, "ci_low": delta - z * se if with_ci else math.nan,
                         "ci_high": delta + z * se if with_ci else math.nan,
                         "p_value": float(2 * norm.sf(abs(delta) / se)) if with_ci and se > 0 else math.nan,
                         "note": "independent studies: the two clustered DeLong variances add"})  # fmt: skip
    return pd.DataFrame(rows)
