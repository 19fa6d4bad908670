"""Compare the runs of a sweep: AUROC tables with CIs, published references beside them, ensembles
and the comparison report (the per-label U-Zeros / U-Ones choice lives in `policy_sweep`)."""

import ast
import json
from pathlib import Path

import numpy as np
import pandas as pd

from chexutils.core import rundir
from chexutils.core.errors import DataError
from chexutils.core.io import write_json
from chexutils.core.labels import COMPETITION_TASKS, OBSERVATIONS, UNCERTAIN
from chexutils.core.rundir import OFFICIAL_VALID, RunDir
from chexutils.evaluation import paired_ranking, policy_choice
from chexutils.evaluation.evaluate import load_run_scores
from chexutils.evaluation.references import reference_table
from chexutils.phantom import TRUTH_JSON
from chexutils.scoring.metrics import NA, metric_text, shown
from chexutils.scoring.predict import write_predictions
from chexutils.training.config import TrainConfig
from chexutils.training.run_identity import NAMED_AXES, run_name_part

MEAN = "mean of 5 competition tasks"
CHOSE_IT = "chose it; not an estimate"  # beside a figure on the set that chose the model
CHOICE_CSV = "policy_choice.csv"  # policy_sweep.CHOICE_CSV: the per-label choice and its criterion


def chosen_on(run_dir, policy: str | None = None) -> str | None:
    """The evaluation set a run's model was chosen on, or None for a run no set chose.

    A ``mixed`` run (e.g. ``mixed-selected``) trains on a mapping chosen per label on a selection
    set: the criterion in the sweep's ``policy_choice.csv`` names it (its split); the official valid
    set, 05's default criterion, when the file or its criterion is missing. Its figures on that set
    are the choice itself, not estimates (issue 19: report them on held-out truth or the official test).
    """
    run_dir = Path(run_dir)
    if policy is None:
        config = RunDir(run_dir).config_file
        policy = json.loads(config.read_text()).get("policy") if config.is_file() else None
    if policy != "mixed":
        return None
    choice = run_dir.parent / CHOICE_CSV
    if choice.is_file():
        criterion = pd.read_csv(choice).get("criterion")
        if criterion is not None and len(criterion.dropna()):
            return policy_choice.CRITERION_SPLIT.get(str(criterion.dropna().iloc[0]), OFFICIAL_VALID)
    return OFFICIAL_VALID


def chosen_label(name: str, run_dir, eval_set: str, policy: str | None = None) -> str:
    """``name``, marked '(chose it; not an estimate)' where ``eval_set`` chose the run (chosen_on)."""
    return f"{name} ({CHOSE_IT})" if chosen_on(run_dir, policy) == eval_set else name


DEFAULT_RECIPE = TrainConfig.loss  # the recipe label of a run trained as the original study did ("bce")


def recipe_label(config: dict) -> str:
    """How a run trained, apart from its policy: its loss, then every other training axis
    (``config.NAMED_AXES``: recipe, init_from, geometry, augmentation) not at its default
    ("bce", "auc-margin", "deepauc auc-margin", "bce pad flip0.5")."""
    parts = [run_name_part(axis, config.get(axis, getattr(TrainConfig, axis))) for axis in NAMED_AXES[1:]]
    recipe = config.get("recipe", "single")
    ordered = ([recipe] if recipe != "single" else []) + [config.get("loss", DEFAULT_RECIPE)]
    return " ".join(ordered + [p for axis, p in zip(NAMED_AXES[1:], parts) if p and axis != "recipe"])


def run_table(sweep_dir) -> pd.DataFrame:
    """One row per finished run folder (config.json + best.pt) of a sweep: policy, recipe (``recipe_label``),
    backbone, size, path."""
    rows = []
    for run in rundir.find_runs(sweep_dir):
        config = run.config()
        rows.append(
            {
                "run": run.name,
                "policy": config["policy"],
                "recipe": recipe_label(config),
                "backbone": config["backbone"],
                "image_size": config["image_size"],
                "seed": config.get("seed", 0),
                "path": run.path,
            }
        )
    columns = ["run", "policy", "recipe", "backbone", "image_size", "seed", "path"]
    return pd.DataFrame(rows, columns=columns).set_index("run")


def auroc_table(runs: pd.DataFrame, eval_set: str = OFFICIAL_VALID) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(AUROC values, text) per run x observation plus the task mean, from each run's metrics.

    Text is metrics.metric_text: value (CI) [positives+ negatives−; patients], 'few positives'
    without a CI below the floor, 'n/a' below 3; values are NaN where the text says n/a. The mean
    column is over the tasks that meet the floor; its text names the tasks left out. A run chosen on
    ``eval_set`` (a ``mixed`` run whose mapping was chosen there, chosen_on) is named
    'run (chose it; not an estimate)'.
    """
    values, text = {}, {}
    for name, row in runs.iterrows():
        run = chosen_label(str(name), row["path"], eval_set, row.get("policy"))
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
                obs[o].get("positive_patients"),
                obs[o].get("negative_patients"),
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


def run_arms(runs: pd.DataFrame) -> dict[str, dict[int, Path]]:
    """{arm: {seed: run folder}}: runs of one policy, recipe, backbone and image size are one arm, its seeds.

    An arm of one run is named by the run; one of several by 'policy [recipe] backbone size px' (the
    recipe named when it is not bce). Where two runs of a group share a seed (e.g. two mixed runs on
    different mappings), each run is its own arm.
    """
    arms = {}
    if "recipe" not in runs:
        runs = runs.assign(recipe=DEFAULT_RECIPE)
    for (policy, recipe, backbone, size), group in runs.groupby(
        ["policy", "recipe", "backbone", "image_size"], sort=False
    ):
        if len(group) == 1 or group["seed"].duplicated().any():
            arms.update({str(run): {int(row["seed"]): Path(row["path"])} for run, row in group.iterrows()})
        else:
            shown = f" {recipe}" if recipe != DEFAULT_RECIPE else ""
            arms[f"{policy}{shown} {backbone} {size}px"] = {
                int(row["seed"]): Path(row["path"]) for _, row in group.iterrows()
            }
    return arms


def rankings_within(
    runs: pd.DataFrame, frame: pd.DataFrame, by: str, eval_set: str = OFFICIAL_VALID, alpha: float = 0.05
) -> dict[str, tuple[pd.DataFrame, str]]:
    """``ranking`` inside each group of ``by``: ``by="recipe"`` ranks the policies within each recipe,
    ``by="policy"`` the recipes (losses) within each policy; the same paired, seed-aware test and Holm
    over each group's pairs. Groups with fewer than 2 arms are left out; {} when the sweep has one recipe."""
    if "recipe" not in runs or runs["recipe"].nunique() < 2:
        return {}
    out = {}
    for name, group in runs.groupby(by, sort=False):
        if len(run_arms(group)) >= 2:
            out[str(name)] = ranking(group, frame, eval_set, alpha)
    return out


def ranking(
    runs: pd.DataFrame,
    frame: pd.DataFrame,
    eval_set: str = OFFICIAL_VALID,
    alpha: float = 0.05,
    tasks=COMPETITION_TASKS,
) -> tuple[pd.DataFrame, str]:
    """(paired_ranking.rank_pairs table, its sentence) for the task means of the sweep's arms (run_arms).

    Scores are the runs' study-level predictions on ``eval_set`` joined to ``frame`` by Path; targets
    are scored as in the runs' metrics (blank negative, uncertain left out), clustered by patient.
    """
    arms = {
        (f"{name} ({CHOSE_IT})" if any(chosen_on(path) == eval_set for path in arm.values()) else name): arm
        for name, arm in run_arms(runs).items()
    }  # a model chosen on this set is named so in the ranking too
    if len(arms) < 2:
        return pd.DataFrame(), f"{len(arms)} arm(s) of runs: nothing to rank."
    loaded = {
        name: {seed: load_run_scores(path, frame, eval_set) for seed, path in arm.items()} for name, arm in arms.items()
    }
    study_labels = next(iter(next(iter(loaded.values())).values())).study_labels[list(tasks)]
    targets = study_labels.fillna(0.0).where(study_labels != UNCERTAIN)
    groups = frame.drop_duplicates("study").set_index("study")["patient"]
    scores = {name: {seed: run.study_scores for seed, run in arm.items()} for name, arm in loaded.items()}
    pairs = paired_ranking.rank_pairs(targets, scores, groups)
    return pairs, paired_ranking.ranking_text(pairs, alpha, "arms of runs (seeds of one policy, backbone and size)")


def mean_table(runs: pd.DataFrame, eval_set: str = OFFICIAL_VALID) -> pd.DataFrame:
    """Per run: the task mean with its CI and which tasks it averages (shown, never used to rank)."""
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


def _negatives(row: dict) -> int:
    return int(row["negatives"]) if row.get("negatives") is not None else int(row["n"]) - int(row["positives"])


def _shown(row: dict) -> str:
    return shown(int(row["positives"]), _negatives(row), row.get("positive_patients"), row.get("negative_patients"))


def data_label(chexpert_dir) -> str:
    """What our rows were measured on: 'phantom' beside published real-data figures must say so."""
    return "phantom CheXpert" if (Path(chexpert_dir) / TRUTH_JSON).is_file() else "CheXpert"


def with_references(values: pd.DataFrame, chexpert_dir) -> pd.DataFrame:
    """Our runs' AUROC above the published figures, each row marked with the data it comes from:
    '[phantom CheXpert, this workbook] run' or '[CheXpert, ...]', '[published, real CheXpert] model'."""
    ours = values.rename(index=lambda r: f"[{data_label(chexpert_dir)}, this workbook] {r}")
    published = reference_table("auroc").T.rename(index=lambda m: f"[published, real CheXpert] {m}")
    return pd.concat([ours, published.reindex(columns=ours.columns)])


def ensemble(run_dirs, frame: pd.DataFrame, eval_set: str, out_dir) -> Path:
    """Each run's study score (max over the study's images), then their mean over the runs: the same
    order as the official test's ensemble (official_test.collect: study max per model, then the mean).
    Written like a run's predictions: every image of a study carries the study's ensemble score, so
    the study max read back is that score."""
    runs = [load_run_scores(d, frame, eval_set) for d in run_dirs]
    if not runs:
        raise DataError(f"{out_dir}: an ensemble needs at least one run")
    studies = runs[0].study_scores.index
    mean = sum(run.study_scores.loc[studies] for run in runs) / len(runs)
    paths = runs[0].image_scores.index
    rows = frame.set_index("Path").loc[paths].reset_index()
    out_dir = Path(out_dir)
    write_predictions(rows, mean.loc[rows["study"]].to_numpy(), RunDir(out_dir).predictions(eval_set))
    configs = [RunDir(d).config() for d in run_dirs]
    write_json(
        out_dir / "ensemble.json",
        {
            "members": [str(d) for d in run_dirs],
            "policies": [c["policy"] for c in configs],
            "combine": "mean over the runs of each run's study max (as on the official test)",
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
            return text + ("; " + plain_text(rest, digits) if _filled(rest) else "")
        return "; ".join(f"{k}: {plain_text(v, digits)}" for k, v in value.items() if _filled(v))
    if isinstance(value, (list, tuple)):
        return ", ".join(plain_text(v, digits) for v in value)
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


def _filled(value) -> bool:
    """False for an empty list, dict or string and None (left out of a report line), True otherwise."""
    return value is not None and not (isinstance(value, (list, tuple, dict, str)) and len(value) == 0)


def _num(value) -> float:
    return float("nan") if value is None else float(value)


def _with_ci(value, low, high) -> str:
    if value is None:
        return "–"
    return f"{value:.3f} ({low:.3f}–{high:.3f})" if low is not None and high is not None else f"{value:.3f}"
