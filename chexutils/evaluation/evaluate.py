"""Evaluate a finished run: predict a CSV with its best checkpoint, pair predictions with labels by
Path, aggregate per study, and score with bootstrap confidence intervals."""

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from chexutils.core import paths
from chexutils.core.devices import pick_device
from chexutils.core.errors import DataError
from chexutils.core.labels import OBSERVATIONS
from chexutils.core.rundir import OFFICIAL_VALID, RunDir, check_eval_set
from chexutils.data.chexpert import read_chexpert
from chexutils.data.loader import BatchLoader, image_source
from chexutils.models.backbones import build_model, is_conditional, probabilities
from chexutils.models.checkpoint import load_checkpoint
from chexutils.scoring.aggregate import aggregate_studies
from chexutils.scoring.metrics import bootstrap_auroc, mean_tasks_with_ci, write_metrics
from chexutils.scoring.predict import predict_logits, write_predictions

LEVELS = ("image", "study")


@dataclass
class RunScores:
    """One run's labels and probabilities at image level (index Path) and study level (index study)."""

    name: str
    image_labels: pd.DataFrame
    image_scores: pd.DataFrame
    study_labels: pd.DataFrame
    study_scores: pd.DataFrame

    def level(self, level: str) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(labels, scores) at 'image' or 'study' level."""
        if level not in LEVELS:
            raise ValueError(f"unknown level {level!r}; known: {', '.join(LEVELS)}")
        return (self.image_labels, self.image_scores) if level == "image" else (self.study_labels, self.study_scores)


def read_labels_csv(csv_path, data_dir) -> pd.DataFrame:
    """A CheXpert-format CSV whose Paths are relative to the data folder (official or re-split), validated."""
    return read_chexpert(paths.resolve(csv_path), root=paths.find_chexpert(data_dir).parent)


@torch.no_grad()
def predict_run(run_dir, frame: pd.DataFrame, eval_set: str, device: str = "auto") -> Path:
    """Write the run's predictions for ``frame`` (evaluation set ``eval_set``) with its best.pt (cached images
    when the run used them)."""
    run = RunDir(run_dir)
    config = run.config()
    device = pick_device(device)
    model = build_model(config["backbone"], config["head"])
    model.load_state_dict(load_checkpoint(run.best, require=("model", "config"))["model"])
    model.to(device)
    size, method = config["image_size"], config["resize_method"]
    images = image_source(
        frame,
        size,
        method,
        config["use_cache"],
        paths.resolve(config["cache_dir"]),
        geometry=config.get("geometry", "square"),
    )
    loader = BatchLoader(images, config["batch_size"] * 2)
    logits = predict_logits(model, loader, len(frame), device, config["amp"])
    path = run.predictions(eval_set)
    write_predictions(frame, probabilities(logits, config["head"], is_conditional(config)).numpy(), path)
    return path


def load_run_scores(run_dir, frame: pd.DataFrame, eval_set: str = OFFICIAL_VALID, name: str | None = None) -> RunScores:
    """Read the run's predictions for ``eval_set`` and pair them with ``frame``'s labels by Path (never row order)."""
    path = RunDir(run_dir).predictions(eval_set)
    if not path.is_file():
        raise DataError(f"{path}: file does not exist; expected the run's image-level predictions")
    preds = pd.read_csv(path)
    missing_cols = [c for c in ("Path", *OBSERVATIONS) if c not in preds.columns]
    if missing_cols:
        raise DataError(
            f"{path} line 1: missing column(s) {', '.join(map(repr, missing_cols))}; "
            "expected Path and one probability column per observation"
        )
    duplicated = preds["Path"][preds["Path"].duplicated()]
    if len(duplicated):
        raise DataError(
            f"{path}: {len(duplicated)} duplicate Path(s), first {duplicated.iloc[0]!r}; expected each image once"
        )
    unknown = preds["Path"][~preds["Path"].isin(frame["Path"])]
    if len(unknown):
        first = ", ".join(repr(p) for p in unknown.iloc[:3])
        raise DataError(
            f"{path}: {len(unknown)} Path(s) not in the label frame (first: {first}); "
            "expected predictions for images of the same CheXpert split"
        )
    rows = frame.set_index("Path").loc[preds["Path"]].reset_index()  # the frame's rows in the CSV's order
    scores = preds[list(OBSERVATIONS)].astype(float)
    study_labels, study_scores = aggregate_studies(rows, scores.to_numpy(), how="max")
    by_path = pd.Index(preds["Path"], name="Path")
    return RunScores(
        name=name or Path(run_dir).name,
        image_labels=rows[list(OBSERVATIONS)].set_axis(by_path),
        image_scores=scores.set_axis(by_path),
        study_labels=study_labels,
        study_scores=study_scores,
    )


def score_run(
    run: RunScores, frame: pd.DataFrame, n_resamples: int = 1000, seed: int = 0, by_patient: bool = True
) -> tuple[pd.DataFrame, dict]:
    """Study-level AUROC/AP with bootstrap CIs (resampling patients) and the 5-task mean with its CI."""
    groups = frame.drop_duplicates("study").set_index("study")["patient"] if by_patient else None
    table = bootstrap_auroc(run.study_labels, run.study_scores, n_resamples, seed, groups=groups)
    summary = {
        "mean_auroc_tasks": mean_tasks_with_ci(
            run.study_labels, run.study_scores, n_resamples=n_resamples, seed=seed, groups=groups
        ),
        "studies": len(run.study_labels),
        "images": len(run.image_labels),
        "resamples": n_resamples,
        "resampled": "patients" if by_patient else "studies",
        "aggregation": "max over a study's images",
    }
    return table, summary


def evaluate_set(
    run_dir, frame: pd.DataFrame, eval_set: str, n_resamples: int = 1000, seed: int = 0, predict: bool = True
) -> tuple[RunScores, pd.DataFrame, dict]:
    """Predict (unless the predictions exist and ``predict`` is False), score and write the run's metrics for
    ``eval_set`` (one of ``rundir.EVAL_SETS``)."""
    check_eval_set(eval_set)
    if predict or not RunDir(run_dir).predictions(eval_set).is_file():
        predict_run(run_dir, frame, eval_set)
    run = load_run_scores(run_dir, frame, eval_set)
    table, summary = score_run(run, frame, n_resamples, seed)
    summary["eval_set"] = eval_set
    write_metrics(table, summary, RunDir(run_dir).metrics(eval_set))
    return run, table, summary
