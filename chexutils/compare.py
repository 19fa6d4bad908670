"""Compare the runs of a sweep: AUROC tables with CIs, published references beside them, the
per-label U-Zeros / U-Ones choice, ensembles, and (on the phantom) the planted truth."""

import ast
import json
from pathlib import Path

import numpy as np
import pandas as pd

from . import evaluate, policy_choice, rundir
from .errors import DataError
from .evaluate import RunScores, load_run_scores
from .io import write_json
from .labels import OBSERVATIONS
from .metrics import NA, metric_text, shown
from .phantom import read_truth
from .policy_choice import scored_labels
from .predict import write_predictions
from .references import reference_table
from .rundir import HELD_OUT, OFFICIAL_VALID, RunDir

MEAN = "mean of 5 competition tasks"


def find_runs(sweep_dir) -> pd.DataFrame:
    """One row per finished run folder (config.json + best.pt) of a sweep: policy, backbone, size, path."""
    rows = []
    for run in rundir.find_runs(sweep_dir):
        config = run.config()
        rows.append(
            {
                "run": run.name,
                "policy": config["policy"],
                "backbone": config["backbone"],
                "image_size": config["image_size"],
                "seed": config.get("seed", 0),
                "path": run.path,
            }
        )
    return pd.DataFrame(rows, columns=["run", "policy", "backbone", "image_size", "seed", "path"]).set_index("run")


def auroc_table(runs: pd.DataFrame, eval_set: str = OFFICIAL_VALID) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(AUROC values, text) per run x observation plus the task mean, from each run's metrics.

    Text is metrics.metric_text: value (CI) [positives+ negatives−; patients], 'few positives'
    without a CI below the floor, 'n/a' below 3; values are NaN where the text says n/a. The mean
    column is over the tasks that meet the floor; its text names the tasks left out.
    """
    values, text = {}, {}
    for run, row in runs.iterrows():
        metrics = json.loads(RunDir(row["path"]).metrics(eval_set).read_text())
        obs = metrics["observations"]
        mean = metrics["summary"]["mean_auroc_tasks"]
        values[run] = {o: _num(obs[o]["auroc"]) if _shown(obs[o]) != NA else float("nan") for o in OBSERVATIONS}
        values[run][MEAN] = _num(mean["mean"])
        text[run] = {
            o: metric_text(
                _num(obs[o]["auroc"]),
                _num(obs[o]["ci_low"]),
                _num(obs[o]["ci_high"]),
                obs[o]["positives"],
                _negatives(obs[o]),
                obs[o].get("patients"),
            )
            for o in OBSERVATIONS
        }
        left_out = mean.get("left_out") or {}
        text[run][MEAN] = _with_ci(mean["mean"], mean["ci_low"], mean["ci_high"]) + (
            f" ({mean.get('label', '')}; left out: {', '.join(f'{k} ({v})' for k, v in left_out.items())})"
            if left_out
            else ""
        )
    return pd.DataFrame(values).T, pd.DataFrame(text).T


def mean_table(runs: pd.DataFrame, eval_set: str = OFFICIAL_VALID) -> pd.DataFrame:
    """Per run: the task mean with its CI and which tasks it averages (for overlap_text)."""
    rows = {}
    for run, row in runs.iterrows():
        mean = json.loads(RunDir(row["path"]).metrics(eval_set).read_text())["summary"]["mean_auroc_tasks"]
        rows[run] = {
            "mean": _num(mean["mean"]),
            "ci_low": _num(mean["ci_low"]),
            "ci_high": _num(mean["ci_high"]),
            "tasks": ", ".join(mean.get("tasks", [])),
        }
    return pd.DataFrame.from_dict(rows, orient="index", columns=["mean", "ci_low", "ci_high", "tasks"])


CHOICE_COLUMNS = [
    "positives",
    "negatives",
    "patients",
    "seeds",
    "U-Zeros mean",
    "U-Zeros seed SD",
    "U-Ones mean",
    "U-Ones seed SD",
    policy_choice.DELTA,
    "ci_low",
    "ci_high",
    "p_value",
    "p_holm",
    "smallest detectable",
    "verdict",
]


def choice_view(choice: pd.DataFrame) -> pd.DataFrame:
    """The columns of a policy choice a reader needs (counts, arms, Δ with CI, p and Holm p, detectable Δ, verdict).

    Below the CI floor (fewer than 10 in the smaller class) only the counts and the verdict are shown.
    """
    view = choice.reindex(columns=CHOICE_COLUMNS)
    view.loc[policy_choice.below_floor(choice), CHOICE_COLUMNS[4:-1]] = np.nan
    return view


def _negatives(row: dict) -> int:
    return int(row["negatives"]) if row.get("negatives") is not None else int(row["n"]) - int(row["positives"])


def _shown(row: dict) -> str:
    return shown(int(row["positives"]), _negatives(row))


def policy_arms(runs: pd.DataFrame, policies=("U-Zeros", "U-Ones")) -> dict[str, dict[int, Path]]:
    """{policy: {seed: run folder}} for the first backbone and size that has every policy (seeds = one arm)."""
    for (_, _), group in runs.groupby(["backbone", "image_size"], sort=False):
        if set(policies) <= set(group["policy"]):
            return {
                p: {int(r["seed"]): Path(r["path"]) for _, r in group[group["policy"] == p].iterrows()}
                for p in policies
            }
    raise DataError(
        f"no backbone and size with runs of all of {', '.join(policies)} among {list(runs.index)}; "
        "the per-label choice needs both"
    )


def arm_scores(arm: dict, frame: pd.DataFrame, split: str) -> dict[int, pd.DataFrame]:
    """{seed: study x observation scores} of one arm's runs on ``split`` (predictions joined by Path)."""
    return {seed: load_run_scores(path, frame, split).study_scores for seed, path in arm.items()}


def with_references(values: pd.DataFrame, label: str = "this workbook") -> pd.DataFrame:
    """Our runs' AUROC above the published figures, each row marked with where it comes from."""
    ours = values.rename(index=lambda r: f"[{label}] {r}")
    published = reference_table("auroc").T.rename(index=lambda m: f"[published, official valid] {m}")
    return pd.concat([ours, published.reindex(columns=ours.columns)])


def selection_sets(arms: dict, chexpert_dir, data_dir, held_out_csv="") -> dict[str, dict]:
    """Per selection criterion available here: its targets, patient groups and each arm's scores.

    official-valid always (the runs' official-valid predictions); held-out-masked with a ``held_out_csv``
    (the runs' held-out predictions); held-out-truth with a ``held_out_csv`` on the phantom. Arms come from
    policy_arms(); studies and predictions are joined by key.
    """
    splits = {OFFICIAL_VALID: evaluate.read_labels_csv(Path(chexpert_dir) / "valid.csv", data_dir)}
    if held_out_csv:
        splits[HELD_OUT] = evaluate.read_labels_csv(held_out_csv, data_dir)
    truth = phantom_truth(chexpert_dir)
    sets = {}
    for criterion, split in policy_choice.CRITERION_SPLIT.items():
        if split not in splits or (criterion == "held-out-truth" and truth is None):
            continue
        frame = splits[split]
        scores = {policy: arm_scores(arm, frame, split) for policy, arm in arms.items()}
        study_labels = load_run_scores(next(iter(next(iter(arms.values())).values())), frame, split).study_labels
        sets[criterion] = {
            "labels": scored_labels(criterion, study_labels, truth[0] if truth else None),
            "groups": frame.drop_duplicates("study").set_index("study")["patient"],
            "arms": scores,
        }
    return sets


def choose_policies(
    sets: dict,
    uncertain: pd.Series | None,
    n_resamples: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
    default: str = policy_choice.DEFAULT_POLICY,
) -> dict[str, pd.DataFrame]:
    """{criterion: policy_choice table} for every selection set (U-Zeros vs U-Ones, seeds as arms)."""
    return {
        criterion: policy_choice.per_label_choice(
            s["arms"]["U-Zeros"],
            s["arms"]["U-Ones"],
            s["labels"],
            criterion,
            s["groups"],
            uncertain,
            n_resamples,
            seed,
            alpha,
            default,
        )
        for criterion, s in sets.items()
    }


def seed_noise_controls(selection: dict, alpha: float = 0.05) -> pd.DataFrame:
    """Seed-to-seed Δ within each policy on one selection set (columns 'policy: ...'), empty if no arm has 2 seeds."""
    parts = {
        policy: policy_choice.seed_noise_control(selection["labels"], arm, selection["groups"], alpha)
        for policy, arm in selection["arms"].items()
    }
    parts = {p: t for p, t in parts.items() if not t.empty}
    if not parts:
        return pd.DataFrame()
    return pd.concat(parts, axis=1).pipe(lambda t: t.set_axis([f"{p}: {c}" for p, c in t.columns], axis=1))


def per_label_choice(
    zeros: RunScores,
    ones: RunScores,
    frame: pd.DataFrame,
    n_resamples: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
    labels: pd.DataFrame | None = None,
    criterion: str = "held-out-masked",
    uncertain: pd.Series | None = None,
) -> pd.DataFrame:
    """One run per policy: policy_choice.per_label_choice with single-seed arms (seed noise not in the test).

    ``labels`` (default: ``criterion``'s targets from the split's report labels) may be replaced,
    e.g. by the phantom's truth (then name the criterion 'held-out-truth').
    """
    targets = (
        scored_labels(criterion, zeros.study_labels)
        if labels is None
        else labels.loc[zeros.study_labels.index].astype(float)
    )
    groups = frame.drop_duplicates("study").set_index("study")["patient"]
    return policy_choice.per_label_choice(
        {0: zeros.study_scores}, {0: ones.study_scores}, targets, criterion, groups, uncertain, n_resamples, seed, alpha
    )


def mixed_mapping(choice: pd.DataFrame) -> dict[str, str]:
    """The mapping for the ``mixed`` policy: the verdict's policy per observation (the better one only
    where the Holm-adjusted test rejects; the stated default, U-Zeros, elsewhere), never the sign of Δ."""
    return policy_choice.mapping_from(choice)


def phantom_truth(chexpert_dir) -> tuple[pd.DataFrame, dict] | None:
    """(study x observation true findings 0/1, expected better policy per observation), or None for real data.

    A thin call of `chexutils.phantom.read_truth`, which also names the positive and null controls."""
    truth = read_truth(chexpert_dir)
    return None if truth is None else (truth.findings, truth.expected)


def choice_vs_truth(from_labels: pd.DataFrame, from_truth: pd.DataFrame, planted: dict) -> pd.DataFrame:
    """Per observation: the expected better policy (the phantom's model), the choice the truth supports, the choice from certain labels."""
    table = pd.DataFrame(
        {
            "expected better policy": pd.Series(planted),
            "choice from truth": from_truth["verdict"],
            "truth: U-Ones minus U-Zeros": from_truth["U-Ones minus U-Zeros"],
            "choice from certain labels": from_labels["verdict"],
            "labels: U-Ones minus U-Zeros": from_labels["U-Ones minus U-Zeros"],
        }
    ).reindex([o for o in OBSERVATIONS if o in planted])
    table["labels recover expected"] = from_labels["choice"].reindex(table.index) == table["expected better policy"]
    table["truth agrees with expected"] = from_truth["choice"].reindex(table.index) == table["expected better policy"]
    return table


def ensemble(run_dirs, frame: pd.DataFrame, eval_set: str, out_dir) -> Path:
    """Mean of the runs' image-level probabilities (joined by Path), written like a run's predictions."""
    runs = [load_run_scores(d, frame, eval_set) for d in run_dirs]
    if not runs:
        raise DataError(f"{out_dir}: an ensemble needs at least one run")
    paths = runs[0].image_scores.index
    mean = sum(run.image_scores.loc[paths] for run in runs) / len(runs)
    out_dir = Path(out_dir)
    rows = frame.set_index("Path").loc[paths].reset_index()
    write_predictions(rows, mean.to_numpy(), RunDir(out_dir).predictions(eval_set))
    configs = [RunDir(d).config() for d in run_dirs]
    write_json(
        out_dir / "ensemble.json",
        {
            "members": [str(d) for d in run_dirs],
            "policies": [c["policy"] for c in configs],
            "combine": "mean probability",
        },
    )
    return out_dir


def write_sections(path, sections: dict) -> Path:
    """A markdown file with one ``## title`` section per named table or text (None entries left out)."""
    parts = [
        f"## {title}\n\n{markdown(table) if isinstance(table, pd.DataFrame) else plain_text(table)}\n"
        for title, table in sections.items()
        if table is not None
    ]
    path = Path(path)
    path.write_text("\n".join(parts))
    return path


def write_comparison(output_dir, sections: dict) -> Path:
    """``comparison.md`` in the sweep folder (the runner's report includes it)."""
    return write_sections(Path(output_dir) / "comparison.md", sections)


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
            text = (
                f"{plain_text(estimate, digits)} (95% CI {plain_text(value['ci_low'], digits)}–"
                f"{plain_text(value['ci_high'], digits)})"
            )
            rest = {
                k: v for k, v in value.items() if k not in ("auroc", "mean", "value", "estimate", "ci_low", "ci_high")
            }
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
        return str(v).replace("|", "\\|")  # a pipe inside a cell would split it

    header = "| " + " | ".join([table.index.name or ""] + [str(c) for c in table.columns]) + " |"
    rule = "|" + "---|" * (len(table.columns) + 1)
    body = [
        "| " + " | ".join([str(i)] + [cell(v) for v in row]) + " |" for i, row in zip(table.index, table.to_numpy())
    ]
    return "\n".join([header, rule, *body])


def _num(value) -> float:
    return float("nan") if value is None else float(value)


def _with_ci(value, low, high) -> str:
    if value is None:
        return "–"
    return f"{value:.3f} ({low:.3f}–{high:.3f})" if low is not None and high is not None else f"{value:.3f}"
