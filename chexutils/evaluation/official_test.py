"""Score a sweep on the official test set once, after every choice: its runs, their ensemble and outside
models, each beside the benchmark radiologists; the run reported is chosen on the official valid set."""

import json
import re
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

from chexutils.core.errors import DataError
from chexutils.core.io import save_figure
from chexutils.core.labels import COMPETITION_TASKS
from chexutils.core.paths import resolve
from chexutils.core.rundir import OFFICIAL_TEST, OFFICIAL_VALID, RunDir, find_runs
from chexutils.data import external_predictions as external
from chexutils.data.test_set_files import LABELS_REPO, REFERENCE_READERS, OfficialTest, majority_vote, read_readers
from chexutils.evaluation import readers
from chexutils.evaluation.compare import CHOSE_IT, write_sections
from chexutils.evaluation.evaluate import predict_run
from chexutils.phantom.sidecar import TEST_TRUTH_CSV

ENSEMBLE = "ensemble-all"  # the same folder notebook 05 writes its valid-set ensemble into
MEAN = "mean of 5 tasks"
BELOW = "radiologists on or below the curve (mean of 5 tasks)"  # the leaderboard's rule: readers.BELOW_RULE


def describe(official: OfficialTest) -> pd.DataFrame:
    """Per competition task: positive studies in the reference and as read by each benchmark radiologist."""
    out = pd.DataFrame({"reference (5-reader majority)": official.labels[list(COMPETITION_TASKS)].sum()})
    for name, reads in official.benchmark.items():
        out[name] = reads[list(COMPETITION_TASKS)].sum()
    out.index.name = f"positive studies of {len(official.labels)} ({len(official.frame)} images)"
    return out.astype(int)


def phantom_reference_quality(test_dir) -> pd.DataFrame | None:
    """Phantom only: each reader and the 5-reader majority against the true findings (sensitivity, specificity)."""
    labels_dir = resolve(test_dir) / LABELS_REPO
    if not (labels_dir / TEST_TRUTH_CSV).is_file():
        return None
    truth = pd.read_csv(labels_dir / TEST_TRUTH_CSV).set_index("study")
    reads = read_readers(labels_dir)
    reads["majority of 5"] = majority_vote({r: reads[r] for r in REFERENCE_READERS})
    rows = {}
    for name, read in reads.items():
        for task in COMPETITION_TASKS:
            point = readers.operating_point(truth[f"{task}|truth"], read.loc[truth.index, task])
            rows[(task, name)] = {"sensitivity": point["sensitivity"], "specificity": point["specificity"]}
    out = pd.DataFrame(rows).T
    out.index.names = ["task", "reader vs the true findings"]
    return out.unstack("task").round(3)


def collect(sweep, official: OfficialTest, external_predictions=(), device: str = "auto") -> dict:
    """name -> (RunDir, study-level scores): every finished run predicted on the test images (again only
    when its best.pt or the test-set files are newer than its predictions), the mean of the runs
    (``ensemble-all``, when there are two or more) and each outside predictions CSV."""
    sweep = Path(sweep)
    studies = official.labels.index
    entries = {}
    inputs = [Path(official.source["images"]), Path(official.source["labels"])]
    for run in find_runs(sweep):
        if _stale(run.predictions(OFFICIAL_TEST), [run.best, *inputs]):
            predict_run(run.path, official.frame, OFFICIAL_TEST, device)
        entries[run.name] = (run, external.study_scores(run.predictions(OFFICIAL_TEST), studies))
    if len(entries) > 1:
        mean = external.ensemble({name: scores for name, (_, scores) in entries.items()})
        entries[ENSEMBLE] = (external.write_study_predictions(mean, sweep / ENSEMBLE), mean)
    for csv in external_predictions:
        name = f"external-{Path(csv).stem}"
        run = external.import_predictions(csv, sweep / name, OFFICIAL_TEST, studies)
        entries[name] = (run, external.study_scores(run.predictions(OFFICIAL_TEST), studies))
    return entries


def score_all(entries: dict, official: OfficialTest, n_resamples: int = 1000, seed: int = 0) -> dict:
    """name -> (AUROC table, radiologist table, summary), each also written into its run folder."""
    results = {}
    for name, (run, scores) in entries.items():
        table, reader_table, summary = readers.score_official_test(
            official.labels, scores, official.benchmark, official.patients, n_resamples, seed
        )
        summary["source"] = official.source
        readers.write_official_test(run.path, table, reader_table, summary)
        results[name] = (table, reader_table, summary)
    return results


def valid_mean(run: RunDir) -> float:
    """The run's 5-task mean AUROC on the official valid set (NaN if it was never scored there)."""
    path = run.metrics(OFFICIAL_VALID)
    if not path.is_file():
        return float("nan")
    mean = json.loads(path.read_text())["summary"].get("mean_auroc_tasks") or {}
    return float("nan") if mean.get("mean") is None else float(mean["mean"])


def choose_report_run(entries: dict, requested: str = "") -> tuple[str, pd.Series]:
    """The entry to show beside the radiologists, and every entry's 5-task mean AUROC on the official valid set.

    ``requested`` names one; otherwise the best on the **official valid** set (outside models have no
    valid-set score and are never chosen; with no valid scores at all, the first entry).
    """
    on_valid = pd.Series(
        {name: valid_mean(run) for name, (run, _) in entries.items()}, name="official valid mean AUROC"
    )
    if requested:
        if requested not in entries:
            raise DataError(f"report_run {requested!r} is not among the scored entries: {', '.join(entries)}")
        return requested, on_valid
    chosen = on_valid.idxmax() if on_valid.notna().any() else next(iter(entries))
    return chosen, on_valid


def report_line(report: str, on_valid: pd.Series, requested: str = "") -> str:
    """What notebook 06 prints of the reported entry: how it was chosen, and its official valid figure
    marked as the choice itself (chose it; not an estimate), never as a held-out estimate."""
    value = on_valid.get(report, float("nan"))
    how = "named by report_run" if requested else "chosen on the official valid set (best 5-task mean AUROC)"
    valid = "never scored there" if not np.isfinite(value) else f"{value:.3f} ({CHOSE_IT})"
    return (
        f"reported: {report}, {how}; its official valid 5-task mean AUROC: {valid}. "
        "Its estimate is its official test row."
    )


def comparison(results: dict) -> pd.DataFrame:
    """One row per entry: AUROC (95% CI) per competition task, the 5-task mean, radiologists on or below the curve."""
    rows = {}
    for name, (table, _, summary) in results.items():
        row = {
            t: _with_ci(table.loc[t, "auroc"], table.loc[t, "ci_low"], table.loc[t, "ci_high"])
            if t in table.index
            else "–"
            for t in COMPETITION_TASKS
        }
        mean = summary["mean_auroc_tasks"]
        row[MEAN] = _with_ci(mean["mean"], mean["ci_low"], mean["ci_high"]) if mean else "–"
        below = summary["radiologists_below_curve"]
        row[BELOW] = (
            f"{below['mean_over_tasks']:.1f} of {below['of']}"
            if below and below["mean_over_tasks"] is not None
            else "–"
        )
        rows[name] = row
    out = pd.DataFrame(rows).T
    out.index.name = "official test (study level)"
    return out


def radiologist_table(reader_table: pd.DataFrame) -> pd.DataFrame:
    """Each benchmark radiologist per task: sensitivity and specificity (95% Wilson CI), and the model beside them."""
    tasks = reader_table[reader_table["observation"].isin(COMPETITION_TASKS)]
    out = pd.DataFrame(
        {
            "task": tasks["observation"],
            "radiologist": tasks["reader"],
            "sensitivity": [_with_ci(*v) for v in tasks[["sensitivity", "sens_low", "sens_high"]].to_numpy()],
            "specificity": [_with_ci(*v) for v in tasks[["specificity", "spec_low", "spec_high"]].to_numpy()],
            "on or below the curve": tasks["below_curve"],
            "model sensitivity at their specificity": [
                _with_ci(*v)
                for v in tasks[["model_sens_at_reader_spec", "model_sens_low", "model_sens_high"]].to_numpy()
            ],
            "difference (paired bootstrap CI)": [
                _with_ci(*v, signed=True) for v in tasks[["sens_delta", "sens_delta_low", "sens_delta_high"]].to_numpy()
            ],
            "model specificity at their sensitivity": [
                _with_ci(*v)
                for v in tasks[["model_spec_at_reader_sens", "model_spec_low", "model_spec_high"]].to_numpy()
            ],
        }
    )
    return out.set_index(["task", "radiologist"])


def figures(name: str, entry, official: OfficialTest, reader_table: pd.DataFrame) -> list[Path]:
    """One ROC + PR figure per competition task with the radiologists' points, in the entry's run folder."""
    run, scores = entry
    paths = []
    for task in COMPETITION_TASKS:
        if task not in scores.columns:
            continue
        path = run.figure(f"radiologists_{OFFICIAL_TEST}_{_slug(task)}")
        fig = radiologist_curves(
            official.labels[task],
            scores.loc[official.labels.index, task],
            reader_table[reader_table["observation"] == task],
            path,
            f"{name} · {task} · official test ({len(official.labels)} studies)",
        )
        plt.close(fig)
        paths.append(path)
    return paths


def write_markdown(sweep, sections: dict) -> Path:
    """``official_test.md`` in the sweep folder (the runner's report.md includes it)."""
    flat = {title: _flat(t) if isinstance(t, pd.DataFrame) else t for title, t in sections.items()}
    return write_sections(Path(sweep) / "official_test.md", flat)


def _flat(table: pd.DataFrame) -> pd.DataFrame:
    """Multi-level row and column labels joined with ' · ' for a markdown table."""
    out = table.copy()
    if isinstance(out.index, pd.MultiIndex):
        out.index = [" · ".join(map(str, i)) for i in out.index]
    if isinstance(out.columns, pd.MultiIndex):
        out.columns = [" · ".join(map(str, c)) for c in out.columns]
    return out


def _stale(path: Path, inputs) -> bool:
    """Missing, or older than any of the files it was made from (the checkpoint, the test-set CSVs)."""
    return not path.is_file() or any(path.stat().st_mtime < Path(p).stat().st_mtime for p in inputs)


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def _with_ci(value, low, high, signed: bool = False) -> str:
    if value is None or not np.isfinite(value):
        return "–"
    fmt = "+.3f" if signed else ".3f"
    if low is None or high is None or not (np.isfinite(low) and np.isfinite(high)):
        return f"{value:{fmt}}"
    return f"{value:{fmt}} ({low:{fmt}} to {high:{fmt}})" if signed else f"{value:.3f} ({low:.3f}–{high:.3f})"


READER_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def radiologist_curves(labels: pd.Series, scores: pd.Series, readers: pd.DataFrame, path=None, title: str = ""):
    """ROC and precision-recall of one observation with each radiologist's operating point on both.

    ``readers``: rows of ``readers.score_readers`` for this observation (sensitivity, specificity and
    their Wilson CIs, PPV, below_curve: on or below the curve). ROC points carry error bars for both CIs; PR points are
    (sensitivity, PPV).
    """
    y, s = np.asarray(labels).astype(int), np.asarray(scores, float)
    fig, (roc_ax, pr_ax) = plt.subplots(1, 2, figsize=(10, 4.6))
    fpr, tpr, _ = roc_curve(y, s)
    roc_ax.plot(fpr, tpr, c="C0", label=f"model AUC {roc_auc_score(y, s):.3f}")
    roc_ax.plot([0, 1], [0, 1], ls=":", c="grey", lw=0.8)
    precision, recall, _ = precision_recall_curve(y, s)
    pr_ax.plot(recall, precision, c="C0", label=f"model AP {average_precision_score(y, s):.3f}")
    for i, row in enumerate(readers.itertuples()):
        marker, colour = READER_MARKERS[i % len(READER_MARKERS)], f"C{i + 1}"
        x, x_low, x_high = 1 - row.specificity, 1 - row.spec_high, 1 - row.spec_low
        where = "on or below" if row.below_curve else "above"
        roc_ax.errorbar(
            x,
            row.sensitivity,
            xerr=[[x - x_low], [x_high - x]],
            yerr=[[row.sensitivity - row.sens_low], [row.sens_high - row.sensitivity]],
            fmt=marker,
            c=colour,
            ms=7,
            capsize=3,
            label=f"{row.reader} ({where} the curve)",
        )
        pr_ax.plot(row.sensitivity, row.ppv, marker, c=colour, ms=7, label=row.reader)
    roc_ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="1 - specificity", ylabel="sensitivity", title="ROC")
    pr_ax.set(
        xlim=(0, 1), ylim=(0, 1.02), xlabel="recall (sensitivity)", ylabel="precision (PPV)", title="precision-recall"
    )
    roc_ax.legend(fontsize=7.5, loc="lower right")
    pr_ax.legend(fontsize=7.5, loc="lower left")
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)
    return fig
