"""The official test set's public files alone (no images): the leaderboard reproduced, what the report
labels mean against the radiologists, how much the radiologists agree, and what that measured noise
implies for the U-Zeros / U-Ones choice (``chexutils.evaluation.policy_noise``).

Files (rajpurkarlab/cheXpert-test-set-labels, read by ``chexutils.data.test_set_files``):
``groundtruth.csv`` (the majority of bc1, bc2, bc3, bc5, bc7, checked on reading), the 8 radiologists,
``labeler/chexpert_labels.csv`` (the report labeler on the same 500 studies, joined on Study),
``example_models/predictions/standard/*`` (scores) and ``example_models/decisions/standard/*`` (the same
models' 0/1 calls). The test set has one study per patient, so resampling studies resamples patients.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import cohen_kappa_score

from chexutils.core.errors import DataError
from chexutils.core.labels import COMPETITION_TASKS, OBSERVATIONS
from chexutils.data import external_predictions as external
from chexutils.data.test_set_files import (
    BENCHMARK_READERS,
    GROUNDTRUTH,
    REFERENCE_READERS,
    REPORT_LABELS_CSV,
    majority_vote,
    read_readers,
    read_report_labels,
    read_study_labels,
)
from chexutils.evaluation import readers as reader_scoring
from chexutils.evaluation.references import LEADERBOARD
from chexutils.scoring.metrics import percentile_interval, resample_counts
from chexutils.scoring.stats import binary_kappa, fleiss_kappa, wilson_interval

PREDICTIONS = "example_models/predictions/standard"
DECISIONS = "example_models/decisions/standard"
ENSEMBLE = "ensemble (mean of the example models)"
ALL_READERS = tuple(sorted(REFERENCE_READERS + BENCHMARK_READERS, key=lambda r: int(r[2:])))  # bc1 ... bc8
REPORT_LABELS = ("positive", "negative", "uncertain", "blank")
REPORT_CODES = {1.0: "positive", 0.0: "negative", -1.0: "uncertain"}  # NaN: blank
KAPPA_CI = "percentile bootstrap over studies (= patients here)"


@dataclass
class PublicFiles:
    """The public test-set files as read: reference, 8 readers, report labels, example models."""

    folder: Path
    truth: pd.DataFrame  # study x 14, the 5-reader majority (groundtruth.csv)
    readers: dict  # bc1 ... bc8 -> study x 14 reads
    report: pd.DataFrame  # study x 14: 1 / 0 / -1 / NaN (blank)
    predictions: dict  # example model -> study x 5 scores
    decisions: dict  # example model -> study x 5 0/1 calls


def read_public_files(folder) -> PublicFiles:
    """Read every public file by column name and join on Study; a mismatch is a DataError naming the file."""
    folder = Path(folder)
    truth = read_study_labels(folder / GROUNDTRUTH)
    reads = read_readers(folder, ALL_READERS)
    if not majority_vote({r: reads[r] for r in REFERENCE_READERS}).loc[truth.index].equals(truth):
        raise DataError(f"{folder / GROUNDTRUTH}: not the majority of {', '.join(REFERENCE_READERS)}")
    report = read_report_labels(folder / REPORT_LABELS_CSV)
    if not report.index.sort_values().equals(truth.index.sort_values()):
        raise DataError(f"{folder / REPORT_LABELS_CSV}: other studies than {folder / GROUNDTRUTH}")
    predictions = {
        p.name.removesuffix("_predictions.csv"): external.study_scores(p, truth.index).loc[truth.index]
        for p in sorted((folder / PREDICTIONS).glob("*_predictions.csv"))
    }
    decisions = {}
    for path in sorted((folder / DECISIONS).glob("*_decisions.csv")):
        calls = read_study_labels(path, COMPETITION_TASKS)
        if not calls.index.sort_values().equals(truth.index.sort_values()):
            raise DataError(f"{path}: other studies than {folder / GROUNDTRUTH}")
        decisions[path.name.removesuffix("_decisions.csv")] = calls.loc[truth.index]
    return PublicFiles(
        folder,
        truth,
        {r: v.loc[truth.index] for r, v in reads.items()},
        report.loc[truth.index],
        predictions,
        decisions,
    )


def describe(files: PublicFiles) -> pd.DataFrame:
    """What was read: per observation, studies, reference positives, positive reads per reader, report labels."""
    out = pd.DataFrame({"reference positives": files.truth.sum().astype(int)})
    for name, read in files.readers.items():
        out[name] = read.sum().astype(int)
    for code, label in REPORT_CODES.items():
        out[f"report {label}"] = (files.report == code).sum()
    out["report blank"] = files.report.isna().sum()
    out.index.name = f"{len(files.truth)} studies"
    return out


# ---- 1. the leaderboard reproduced ---------------------------------------------------------


def score_models(files: PublicFiles, n_resamples: int = 1000, seed: int = 0) -> dict:
    """name -> (AUROC table, radiologist table, summary) for every example model and their ensemble."""
    entries = dict(files.predictions)
    entries[ENSEMBLE] = external.ensemble(files.predictions)
    bench = {r: files.readers[r] for r in BENCHMARK_READERS}
    return {
        name: reader_scoring.score_official_test(files.truth, scores, bench, n_resamples=n_resamples, seed=seed)
        for name, scores in entries.items()
    }


def leaderboard(results: dict) -> pd.DataFrame:
    """One row per model, best 5-task mean first: AUROC (logit DeLong 95% CI) per task, the mean
    (percentile bootstrap CI), and the benchmark radiologists on or below the curve per task and on average."""
    rows = {}
    for name, (table, _, summary) in results.items():
        row = {
            t: ci_text(table.loc[t, "auroc"], table.loc[t, "ci_low"], table.loc[t, "ci_high"])
            for t in COMPETITION_TASKS
        }
        mean = summary["mean_auroc_tasks"]
        row["mean of 5"] = ci_text(mean["mean"], mean["ci_low"], mean["ci_high"])
        below = summary["radiologists_below_curve"]
        row["readers on or below, per task"] = " ".join(str(below["per_task"][t]) for t in COMPETITION_TASKS)
        row["readers on or below (mean)"] = round(below["mean_over_tasks"], 1)
        row["_mean"] = mean["mean"]
        rows[name] = row
    out = pd.DataFrame.from_dict(rows, orient="index").sort_values("_mean", ascending=False).drop(columns="_mean")
    out.index.name = "example model"
    return out


def beside_published(results: dict) -> pd.DataFrame:
    """The leaderboard's displayed figures (``references.LEADERBOARD``) beside ours, for the models on it."""
    rows = {}
    for name, (auc, rads, per_task) in LEADERBOARD.items():
        summary = results[name][2]
        below = summary["radiologists_below_curve"]
        ours = tuple(below["per_task"][t] for t in COMPETITION_TASKS)
        rows[name] = {
            "AUC (leaderboard)": auc,
            "AUC (here)": f"{summary['mean_auroc_tasks']['mean']:.3f}",
            "rads below (leaderboard)": rads,
            "rads below (here)": round(below["mean_over_tasks"], 1),
            "per task (leaderboard)": " ".join(map(str, per_task)),
            "per task (here)": " ".join(map(str, ours)),
        }
        rows[name]["reproduced"] = (
            rows[name]["AUC (leaderboard)"] == rows[name]["AUC (here)"]
            and rads == rows[name]["rads below (here)"]
            and per_task == ours
        )
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("leaderboard entry")


def decision_points(files: PublicFiles, level: float = 0.95) -> pd.DataFrame:
    """Each model's released 0/1 decisions scored like a radiologist (sensitivity, specificity, Wilson CIs),
    beside the 3 benchmark radiologists, per competition task."""
    callers = [("model", n, d) for n, d in files.decisions.items()]
    callers += [("radiologist", r, files.readers[r]) for r in BENCHMARK_READERS]
    rows = []
    for kind, name, calls in callers:
        for task in COMPETITION_TASKS:
            point = reader_scoring.operating_point(files.truth[task], calls[task], level)
            rows.append({"task": task, "who": name, "kind": kind} | point)
    return pd.DataFrame(rows)


def decision_table(points: pd.DataFrame) -> pd.DataFrame:
    """Who x task: 'sensitivity (CI) / specificity (CI)' for display."""
    text = points.apply(
        lambda r: f"{ci_text(r.sensitivity, r.sens_low, r.sens_high, 2)} / {ci_text(r.specificity, r.spec_low, r.spec_high, 2)}",
        axis=1,
    )
    return points.assign(text=text).pivot(index=["kind", "who"], columns="task", values="text")


# ---- 2. what the report labels mean ----------------------------------------------------------


def report_label_meaning(report: pd.DataFrame, truth: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Per observation and report label: studies, truly positive by the radiologist majority, share, Wilson CI."""
    rows = []
    for obs in report.columns:
        kinds = report[obs].map(REPORT_CODES).fillna("blank")
        for label in REPORT_LABELS:
            rows.append(_share_row(truth[obs][kinds == label], level, observation=obs, report_label=label))
    return pd.DataFrame(rows)


def others_majority(reads: dict, reader: str) -> pd.DataFrame:
    """The majority of every reader but ``reader`` (7 of the 8: positive with at least 4)."""
    return majority_vote({r: v for r, v in reads.items() if r != reader})


def reader_meaning(reads: dict, level: float = 0.95) -> pd.DataFrame:
    """Per reader, observation and read (positive / negative): the share truly positive by the majority of the OTHER readers."""
    rows = []
    for reader, read in reads.items():
        others = others_majority(reads, reader)
        for obs in read.columns:
            for value, label in ((1.0, "positive"), (0.0, "negative")):
                picked = others[obs][read[obs] == value]
                rows.append(_share_row(picked, level, reader=reader, observation=obs, read=label))
    return pd.DataFrame(rows)


def meaning_grid(table: pd.DataFrame, columns, with_ci: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(share grid, text grid): observations (CheXpert order) x ``columns`` (e.g. report_label); the text
    is 'k/n', or 'k/n share (Wilson CI)' ``with_ci``; empty groups are NaN / ''."""
    columns = [columns] if isinstance(columns, str) else list(columns)
    keys = table[columns].astype(str).agg(" ".join, axis=1)
    text = table["truly_positive"].astype(str) + "/" + table["studies"].astype(str)
    if with_ci:
        text += " " + pd.Series(
            [ci_text(v, lo, hi, 2) for v, lo, hi in table[["share", "low", "high"]].to_numpy()], index=table.index
        )
    wide = table.assign(column=keys, text=text.where(table["studies"] > 0, ""))
    order = list(dict.fromkeys(keys))
    shares = wide.pivot(index="observation", columns="column", values="share").loc[list(OBSERVATIONS), order]
    texts = wide.pivot(index="observation", columns="column", values="text").loc[list(OBSERVATIONS), order]
    return shares.rename_axis(columns=None), texts.rename_axis(columns=None)


# ---- 3. how much the readers agree -----------------------------------------------------------


def reader_agreement(reads: dict, n_resamples: int = 1000, seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """Each reader against the majority of the other 7: Cohen's kappa (sklearn) with a CI by ``KAPPA_CI``."""
    studies = next(iter(reads.values())).index
    counts = resample_counts(len(studies), n_resamples, seed)
    rows = []
    for reader, read in reads.items():
        others = others_majority(reads, reader)
        for obs in read.columns:
            a, b = read[obs].to_numpy().astype(int), others[obs].to_numpy().astype(int)
            kappa = cohen_kappa_score(a, b) if len({*a, *b}) > 1 else np.nan
            low, high = percentile_interval(binary_kappa(a, b, counts), level)
            rows.append(
                dict(
                    reader=reader,
                    observation=obs,
                    kappa=kappa,
                    low=low,
                    high=high,
                    reader_positives=int(a.sum()),
                    others_positives=int(b.sum()),
                    studies=len(a),
                )
            )
    return pd.DataFrame(rows)


def fleiss_table(reads: dict, n_resamples: int = 1000, seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """Fleiss' kappa of all readers per observation, with a percentile bootstrap CI over studies."""
    studies = next(iter(reads.values())).index
    counts = resample_counts(len(studies), n_resamples, seed)
    rows = []
    for obs in OBSERVATIONS:
        positive = sum(v[obs].to_numpy() for v in reads.values())
        table = np.column_stack([positive, len(reads) - positive])
        low, high = percentile_interval(fleiss_kappa(table, counts), level)
        rows.append(
            {
                "observation": obs,
                "fleiss_kappa": float(fleiss_kappa(table)[0]),
                "low": low,
                "high": high,
                "positive_reads": int(positive.sum()),
                "reads": int(table.sum()),
                "raters": len(reads),
            }
        )
    return pd.DataFrame(rows)


def agreement_grid(agreement: pd.DataFrame, fleiss: pd.DataFrame) -> pd.DataFrame:
    """Observations x readers: 'kappa (CI)', and Fleiss' kappa of all of them in the last column."""
    text = agreement.assign(
        text=[ci_text(k, lo, hi, 2) for k, lo, hi in agreement[["kappa", "low", "high"]].to_numpy()]
    )
    grid = text.pivot(index="observation", columns="reader", values="text").loc[list(OBSERVATIONS), list(ALL_READERS)]
    grid[f"Fleiss ({len(ALL_READERS)} readers)"] = [
        ci_text(k, lo, hi, 2)
        for k, lo, hi in fleiss.set_index("observation").loc[grid.index, ["fleiss_kappa", "low", "high"]].to_numpy()
    ]
    return grid


def _share_row(picked: pd.Series, level: float, **keys) -> dict:
    k, n = int(picked.sum()), int(len(picked))
    low, high = wilson_interval(k, n, level)
    return keys | {"truly_positive": k, "studies": n, "share": k / n if n else np.nan, "low": low, "high": high}


def _share_text(row: pd.Series) -> str:
    return f"{int(row['truly_positive'])}/{int(row['studies'])}"


def ci_text(value, low, high, digits: int = 3, signed: bool = False) -> str:
    if pd.isna(value):
        return "n/a"
    fmt = f"{{:{'+' if signed else ''}.{digits}f}}"
    if pd.isna(low) or pd.isna(high):
        return fmt.format(value)
    return f"{fmt.format(value)} ({fmt.format(low)} to {fmt.format(high)})"
