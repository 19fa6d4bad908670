"""Compare the runs of a sweep: AUROC tables with CIs, published references beside them, the
per-label U-Zeros / U-Ones choice, ensembles, and (on the phantom) the planted truth."""

import ast
import json
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import DataError
from .evaluate import RunScores, load_run_scores, run_config
from .io import write_json
from .labels import OBSERVATIONS
from .metrics import paired_bootstrap
from .phantom import TRUTH_CSV, TRUTH_JSON
from .policies import SEED_MIXED_MAPPING
from .predict import write_predictions
from .references import reference_table

MEAN = "mean of 5 competition tasks"
SCORED_ON = "certain labels only (1 positive; 0 and blank negative; uncertain left out)"


def find_runs(sweep_dir) -> pd.DataFrame:
    """One row per finished run folder (config.json + best.pt) of a sweep: policy, backbone, size, path."""
    rows = []
    for config_path in sorted(Path(sweep_dir).glob("*/config.json")):
        if not (config_path.parent / "best.pt").is_file():
            continue
        config = json.loads(config_path.read_text())
        rows.append({"run": config_path.parent.name, "policy": config["policy"], "backbone": config["backbone"],
                     "image_size": config["image_size"], "path": config_path.parent})
    return pd.DataFrame(rows, columns=["run", "policy", "backbone", "image_size", "path"]).set_index("run")


def auroc_table(runs: pd.DataFrame, metrics_name: str = "metrics") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(AUROC values, 'value (low–high)' text) per run x observation plus the 5-task mean, from each run's metrics."""
    values, text = {}, {}
    for run, row in runs.iterrows():
        metrics = json.loads((Path(row["path"]) / f"{metrics_name}.json").read_text())
        obs = metrics["observations"]
        mean = metrics["summary"]["mean_auroc_tasks"]
        values[run] = {o: _num(obs[o]["auroc"]) for o in OBSERVATIONS} | {MEAN: _num(mean["mean"])}
        text[run] = {o: _with_ci(obs[o]["auroc"], obs[o]["ci_low"], obs[o]["ci_high"]) for o in OBSERVATIONS} | {
            MEAN: _with_ci(mean["mean"], mean["ci_low"], mean["ci_high"])}
    return pd.DataFrame(values).T, pd.DataFrame(text).T


def with_references(values: pd.DataFrame, label: str = "this workbook") -> pd.DataFrame:
    """Our runs' AUROC above the published figures, each row marked with where it comes from."""
    ours = values.rename(index=lambda r: f"[{label}] {r}")
    published = reference_table("auroc").T.rename(index=lambda m: f"[published, official valid] {m}")
    return pd.concat([ours, published.reindex(columns=ours.columns)])


def zeros_ones_pair(runs: pd.DataFrame) -> tuple[Path, Path]:
    """The U-Zeros and U-Ones runs of the first backbone and size that has both."""
    for (_, _), group in runs.groupby(["backbone", "image_size"], sort=False):
        by_policy = group.set_index("policy")["path"]
        if {"U-Zeros", "U-Ones"} <= set(by_policy.index):
            return Path(by_policy["U-Zeros"]), Path(by_policy["U-Ones"])
    raise DataError(f"no backbone and size with both a U-Zeros and a U-Ones run among {list(runs.index)}; "
                    "the per-label choice needs both")


def per_label_choice(zeros: RunScores, ones: RunScores, frame: pd.DataFrame, n_resamples: int = 2000,
                     seed: int = 0, alpha: float = 0.05, labels: pd.DataFrame | None = None) -> pd.DataFrame:
    """For each observation: U-Ones minus U-Zeros AUROC with a paired bootstrap over patients, and the choice.

    ``labels`` (default: the split's report labels) may be replaced, e.g. by the phantom's truth.
    """
    labels = zeros.study_labels if labels is None else labels.loc[zeros.study_labels.index]
    groups = frame.drop_duplicates("study").set_index("study")["patient"]
    test = paired_bootstrap(labels, ones.study_scores, zeros.study_scores, None, n_resamples, seed, groups=groups)
    test = test.rename(columns={"delta": "U-Ones minus U-Zeros"})
    chosen = np.where(test["U-Ones minus U-Zeros"] > 0, "U-Ones", "U-Zeros")
    significant = test["p_value"] < alpha
    test["choice"] = np.where(test["U-Ones minus U-Zeros"].isna(), "undefined", chosen)
    test["significant"] = significant
    test["verdict"] = [c if s else ("undefined" if c == "undefined" else f"no significant difference (points to {c})")
                       for c, s in zip(test["choice"], significant)]
    test["scored on"] = SCORED_ON
    return test


def mixed_mapping(choice: pd.DataFrame) -> dict[str, str]:
    """The mapping for the ``mixed`` policy: the chosen policy per observation (the seed's where undefined)."""
    return {obs: (choice.loc[obs, "choice"] if choice.loc[obs, "choice"] != "undefined" else SEED_MIXED_MAPPING[obs])
            for obs in OBSERVATIONS}


def phantom_truth(chexpert_dir) -> tuple[pd.DataFrame, dict] | None:
    """(study x observation true findings 0/1, planted better policy per observation), or None for real data."""
    chexpert_dir = Path(chexpert_dir)
    if not (chexpert_dir / TRUTH_JSON).is_file():
        return None
    truth = pd.read_csv(chexpert_dir / TRUTH_CSV).set_index("study")
    table = truth[[f"{o}|truth" for o in OBSERVATIONS]].set_axis(list(OBSERVATIONS), axis=1)
    return table, json.loads((chexpert_dir / TRUTH_JSON).read_text())["better_policy"]


def choice_vs_truth(from_labels: pd.DataFrame, from_truth: pd.DataFrame, planted: dict) -> pd.DataFrame:
    """Per observation: the planted better policy, the choice the truth supports, the choice from certain labels."""
    table = pd.DataFrame({
        "planted better policy": pd.Series(planted),
        "choice from truth": from_truth["verdict"],
        "truth: U-Ones minus U-Zeros": from_truth["U-Ones minus U-Zeros"],
        "choice from certain labels": from_labels["verdict"],
        "labels: U-Ones minus U-Zeros": from_labels["U-Ones minus U-Zeros"],
    }).reindex([o for o in OBSERVATIONS if o in planted])
    table["labels recover planted"] = from_labels["choice"].reindex(table.index) == table["planted better policy"]
    table["truth agrees with planted"] = from_truth["choice"].reindex(table.index) == table["planted better policy"]
    return table


def ensemble(run_dirs, frame: pd.DataFrame, split: str, out_dir) -> Path:
    """Mean of the runs' image-level probabilities (joined by Path), written like a run's predictions."""
    runs = [load_run_scores(d, frame, split) for d in run_dirs]
    if not runs:
        raise DataError(f"{out_dir}: an ensemble needs at least one run")
    paths = runs[0].image_scores.index
    mean = sum(run.image_scores.loc[paths] for run in runs) / len(runs)
    out_dir = Path(out_dir)
    rows = frame.set_index("Path").loc[paths].reset_index()
    write_predictions(rows, mean.to_numpy(), out_dir / f"predictions_{split}.csv")
    configs = [run_config(d) for d in run_dirs]
    write_json(out_dir / "ensemble.json", {"members": [str(d) for d in run_dirs],
                                           "policies": [c["policy"] for c in configs], "combine": "mean probability"})
    return out_dir


def write_comparison(output_dir, sections: dict) -> Path:
    """``comparison.md``: one markdown section per named table (the runner's report includes it)."""
    parts = [f"## {title}\n\n{markdown(table) if isinstance(table, pd.DataFrame) else plain_text(table)}\n"
             for title, table in sections.items() if table is not None]
    path = Path(output_dir) / "comparison.md"
    path.write_text("\n".join(parts))
    return path


def plain_text(value, digits: int = 3) -> str:
    """A value for a report line: numbers rounded, an estimate with its CI as 'x (95% CI lo–hi)', no raw dicts."""
    if isinstance(value, str) and value.startswith("{"):  # a dict already turned into text upstream
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return value
    if isinstance(value, dict):
        estimate = next((value[k] for k in ("auroc", "mean", "value", "estimate") if k in value), None)
        if estimate is not None and "ci_low" in value and "ci_high" in value:
            text = f"{plain_text(estimate, digits)} (95% CI {plain_text(value['ci_low'], digits)}–" \
                   f"{plain_text(value['ci_high'], digits)})"
            rest = {k: v for k, v in value.items() if k not in ("auroc", "mean", "value", "estimate", "ci_low", "ci_high")}
            return text + ("; " + plain_text(rest, digits) if rest else "")
        return "; ".join(f"{k}: {plain_text(v, digits)}" for k, v in value.items())
    if isinstance(value, (float, np.floating)):
        return "–" if np.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def markdown(table: pd.DataFrame, digits: int = 3) -> str:
    """A pandas table as a GitHub markdown table (numbers rounded, NaN shown as –)."""
    def cell(v):
        if isinstance(v, (float, np.floating)):
            return "–" if np.isnan(v) else f"{v:.{digits}f}"
        return str(v)
    header = "| " + " | ".join([table.index.name or ""] + [str(c) for c in table.columns]) + " |"
    rule = "|" + "---|" * (len(table.columns) + 1)
    body = ["| " + " | ".join([str(i)] + [cell(v) for v in row]) + " |" for i, row in zip(table.index, table.to_numpy())]
    return "\n".join([header, rule, *body])


def _num(value) -> float:
    return float("nan") if value is None else float(value)


def _with_ci(value, low, high) -> str:
    if value is None:
        return "–"
    return f"{value:.3f} ({low:.3f}–{high:.3f})" if low is not None and high is not None else f"{value:.3f}"
