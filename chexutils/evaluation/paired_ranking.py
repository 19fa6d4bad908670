"""Rankings of runs only from paired, seed-aware tests: every pair of arms on the task mean, Holm
across the pairs; the sentence names the pairs that differ and says "not ranked" for the rest
(overlapping or separate intervals decide nothing)."""

import itertools

import numpy as np
import pandas as pd

from chexutils.core.errors import DataError
from chexutils.evaluation.policy_choice import ALPHA
from chexutils.scoring.metrics import CI_MIN_POSITIVES
from chexutils.scoring.stats import auroc_influence, holm, seed_arm_statistic


def rank_pairs(
    labels: pd.DataFrame,
    arms: dict,
    groups: pd.Series | None = None,
    min_positives: int = CI_MIN_POSITIVES,
    level: float = 0.95,
) -> pd.DataFrame:
    """Every pair of arms compared on the task mean by a paired, seed-aware test; Holm over the pairs.

    ``labels``: study x task targets (1/0, NaN left out); ``arms``: {arm: {seed: study x task
    scores}} joined by study. The tasks are the columns with >= ``min_positives`` in the smaller
    class (``attrs['tasks']``). A run's task mean is the mean of its task AUROCs; an arm's, the mean
    over its seeds. Per pair the study part of the variance comes from the AUROCs' influences per
    patient (stats.auroc_influence, clustered by ``groups``; tasks and runs share the studies, so
    the pairing and the tasks' correlation are kept) and the rest is stats.seed_arm_statistic on
    the seeds' task means: seed variance pooled over the pair's two arms, t at Satterthwaite's df,
    the interval of the same test (study-only, normal, with one seed per arm). Columns: a, b, mean
    a, mean b, seeds, delta (b - a), ci_low, ci_high, df, p_value, p_holm.
    """
    columns = ["a", "b", "mean a", "mean b", "seeds", "delta", "ci_low", "ci_high", "df", "p_value", "p_holm"]
    target = labels.where(labels.isin([0.0, 1.0]))
    smaller = np.minimum((target == 1).sum(), (target == 0).sum())
    tasks = [t for t in labels.columns if smaller[t] >= min_positives]
    runs = [(name, seed) for name in arms for seed in sorted(arms[name])]
    for name, seed in runs:
        missing = labels.index.difference(arms[name][seed].index)
        if len(missing):
            raise DataError(f"{name} seed {seed}: no scores for {len(missing)} studies (first {missing[0]!r})")
    if len(arms) < 2 or not tasks:
        return pd.DataFrame(columns=columns)
    keys = labels.index.to_numpy() if groups is None else groups.reindex(labels.index).to_numpy()
    codes = pd.factorize(keys, use_na_sentinel=False)[0]
    n_clusters = int(codes.max()) + 1
    task_auc = np.zeros((len(runs), len(tasks)))
    influence = np.zeros((len(runs), n_clusters))
    for j, task in enumerate(tasks):
        keep = target[task].notna().to_numpy()
        scores = np.stack([arms[name][seed].loc[labels.index, task].to_numpy(float)[keep] for name, seed in runs])
        auc, psi = auroc_influence(target[task].to_numpy(float)[keep], scores, codes[keep], n_clusters)
        task_auc[:, j] = auc
        influence += psi / len(tasks)
    mean = task_auc.mean(axis=1)
    factor = n_clusters / max(n_clusters - 1, 1)
    rows = []
    for a, b in itertools.combinations(arms, 2):
        in_a = [i for i, (name, _) in enumerate(runs) if name == a]
        in_b = [i for i, (name, _) in enumerate(runs) if name == b]
        contrast = influence[in_b].mean(axis=0) - influence[in_a].mean(axis=0)
        test = seed_arm_statistic(mean[in_a], mean[in_b], factor * float(contrast @ contrast), level)
        rows.append(
            {
                "a": a,
                "b": b,
                "mean a": test["mean_a"],
                "mean b": test["mean_b"],
                "seeds": f"{len(in_a)}+{len(in_b)}",
                **{k: test[k] for k in ("delta", "ci_low", "ci_high", "df", "p_value")},
            }
        )
    table = pd.DataFrame(rows, columns=columns[:-1])
    table["p_holm"] = holm(table["p_value"].to_numpy(float))
    table.attrs["tasks"] = tasks
    return table


def ranking_text(pairs: pd.DataFrame, alpha: float = ALPHA, what: str = "runs") -> str:
    """The ranking sentence from rank_pairs(): the pairs whose Holm-adjusted test rejects, named with
    Δ and adjusted p, and 'not ranked' for every other pair; never a conclusion from CI overlap."""
    if pairs.empty:
        return f"Fewer than two {what} with a task mean over tasks that meet the floor: nothing to rank."
    tasks = pairs.attrs.get("tasks", [])
    means = {**dict(zip(pairs["a"], pairs["mean a"])), **dict(zip(pairs["b"], pairs["mean b"]))}
    head = (
        f"Task mean over {len(tasks)} task(s) ({', '.join(tasks)}): "
        + ", ".join(f"{k} {v:.3f}" for k, v in sorted(means.items(), key=lambda kv: -kv[1]))
        + f". Paired, seed-aware test for each of the {len(pairs)} pair(s) of {what} (same studies, "
        f"clustered by patient, seed-to-seed variance added, t at Satterthwaite's df), Holm over the pairs, "
        f"α = {alpha}: "
    )
    differ, rest = [], []
    for _, row in pairs.iterrows():
        if row["p_holm"] < alpha:
            better, worse = (row["b"], row["a"]) if row["delta"] > 0 else (row["a"], row["b"])
            differ.append(f"{better} > {worse} (Δ {abs(row['delta']):.3f}, Holm p {row['p_holm']:.3g})")
        else:
            rest.append(f"{row['a']} vs {row['b']} (Holm p {row['p_holm']:.3g})")
    text = head + ("; ".join(differ) + "." if differ else "no pair differs.")
    if rest:
        text += " Not ranked (no detectable difference): " + "; ".join(rest) + "."
    single = [f"{row['a']} vs {row['b']}" for _, row in pairs.iterrows() if row["seeds"] == "1+1"]
    if single:
        text += (
            f" One seed on each side for {len(single)} pair(s) ({'; '.join(single)}): seed noise is not in "
            "those tests (study noise only), so a difference there may be training noise."
        )
    return text
