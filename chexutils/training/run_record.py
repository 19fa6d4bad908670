"""A training run's bookkeeping, apart from the training loop (chexutils.training.train): the labelled
images it reads, the selection score of an epoch, the run folder's files (history.csv, best.pt,
checkpoint.pt, config.json, predictions), resume, the leakage checks before any work, and the
distributed helpers. Every file is written atomically (chexutils.core.io, models.checkpoint)."""

import dataclasses
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
import torchvision

from chexutils import __version__
from chexutils.core import paths
from chexutils.core.errors import DataError
from chexutils.core.io import write_table
from chexutils.core.labels import COMPETITION_TASKS, MULTICLASS, OBSERVATIONS, certain_only
from chexutils.core.rundir import RunDir
from chexutils.data.chexpert import read_chexpert
from chexutils.data.loader import BatchLoader, image_source
from chexutils.models.backbones import probabilities
from chexutils.models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from chexutils.scoring.aggregate import aggregate_studies
from chexutils.scoring.metrics import per_observation
from chexutils.scoring.predict import predict_logits, write_predictions
from chexutils.training.config import (
    SELECT_METRICS,
    TrainConfig,
    check_patient_overlap,
    effective_lr,
)
from chexutils.training.losses import masked_loss
from chexutils.training.policies import Targets
from chexutils.training.run_identity import config_differences

HISTORY_COLUMNS = ["epoch", "train_loss", "valid_loss", "valid_auroc_tasks", "lr", "seconds", "images_per_s"]


@dataclass
class LabelledImages:
    """One CSV's rows, their images (cache or JPEGs) and the training targets for them."""

    frame: pd.DataFrame
    images: object
    values: torch.Tensor
    mask: torch.Tensor


def load_labelled_images(csv_path: Path, root: Path, cfg: TrainConfig, targets, rank: int) -> LabelledImages:
    """Read and validate a CSV, open its image cache (rank 0 builds it), compute ``targets(frame)``."""
    frame = read_chexpert(csv_path, root=root)
    source = lambda: image_source(
        frame,
        cfg.image_size,
        cfg.resize_method,
        cfg.use_cache,
        paths.resolve(cfg.cache_dir),
        cfg.cache_check,
        cfg.geometry,
    )
    if rank == 0:
        images = source()
    barrier()  # other ranks reuse the cache rank 0 built
    if rank != 0:
        images = source()
    made = targets(frame)
    return LabelledImages(frame, images, torch.as_tensor(made.values), torch.as_tensor(made.mask, dtype=torch.float32))


def certain_targets(head: str):
    """Policy-independent targets for the selection loss: certain labels only (blank negative, -1 left out)."""

    def targets(frame):
        labels, keep = certain_only(frame[list(OBSERVATIONS)].to_numpy())
        values = labels.astype(np.int64) if head == MULTICLASS else labels.astype(np.float32)
        return Targets(values, keep.astype(np.float32))

    return targets


def score_selection(model, head, split: LabelledImages, device, cfg: TrainConfig) -> tuple[dict, np.ndarray]:
    """Loss on certain labels and study-level (max over views) mean AUROC over the 5 tasks, for choosing best.pt.

    The history columns keep their names ``valid_loss`` / ``valid_auroc_tasks`` (``select_metric`` values).
    """
    loader = BatchLoader(split.images, cfg.batch_size * 2, workers=cfg.workers)
    logits = predict_logits(model, loader, len(split.frame), device, cfg.amp)
    conditional = cfg.recipe == "hierarchical"  # outputs P(child | parent): scored as P(child), the product rule
    probs = probabilities(logits, head, conditional)
    if conditional:
        logits = torch.logit(probs.double().clamp(1e-7, 1 - 1e-7)).float()
    loss = masked_loss(logits, split.values, split.mask, head).item()
    probs = probs.numpy()
    labels, study_probs = aggregate_studies(split.frame, probs)
    auroc = per_observation(labels, study_probs).loc[list(COMPETITION_TASKS), "auroc"].astype(float)
    return {"valid_loss": loss, "valid_auroc_tasks": float(auroc.mean()) if auroc.notna().any() else math.nan}, probs


def kept(run: RunDir, history: list) -> str:
    """What a diverged run leaves: its last good checkpoint, or nothing when the first epoch diverged."""
    if not history:
        return "nothing saved (it diverged in its first epoch)"
    return f"the last good {run.checkpoint.name} (epoch {history[-1]['epoch']}) and {run.best.name} are kept"


def save_epoch(
    run: RunDir, cfg, model, optimizer, scheduler, epoch: int, history: list, best: float, first_of_stage=False
) -> float:
    """history.csv, best.pt when the selection metric improved (or at the first epoch of a recipe's last
    stage: best.pt is chosen among that stage's epochs), then checkpoint.pt (all atomic)."""
    write_table(pd.DataFrame(history)[HISTORY_COLUMNS], run.history, index=False)
    metric = SELECT_METRICS[cfg.select_metric] * history[-1][cfg.select_metric]  # higher is better
    config = dataclasses.asdict(cfg)
    if metric > best or not run.best.is_file() or first_of_stage:
        best = metric if math.isfinite(metric) else best
        save_checkpoint({"model": model.state_dict(), "epoch": epoch, "metric": metric, "config": config}, run.best)
    save_checkpoint(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "epoch": epoch,
            "best": best,
            "history": history,
            "rng": torch.get_rng_state(),
            "config": config,
        },
        run.checkpoint,
    )
    return best


def saved_epoch(path: Path) -> int:
    """The last finished epoch (0-based) that checkpoint.pt holds; -1 when there is none (a fresh run)."""
    return int(load_checkpoint(path, require=("epoch",))["epoch"]) if path.is_file() else -1


def resume(path: Path, cfg: TrainConfig, model, optimizer, scheduler) -> tuple[int, list, float]:
    """Restore a run from checkpoint.pt (same config required); (0, [], -inf) for a new run."""
    if not path.is_file():
        return 0, [], -math.inf
    state = load_checkpoint(
        path, require=("model", "optimizer", "scheduler", "epoch", "best", "history", "rng", "config")
    )
    changed = config_differences(state["config"], cfg)
    if changed:
        raise CheckpointError(
            f"{path}: was trained with other settings ({', '.join(changed)}); "
            "use another run_dir or delete the run to start over"
        )
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"])
    return state["epoch"] + 1, list(state["history"]), state["best"]


def write_best_predictions(run: RunDir, cfg, model, head, sets: dict, device) -> None:
    """predictions_<set>.csv from the best checkpoint's weights."""
    model.load_state_dict(load_checkpoint(run.best, map_location=device, require=("model",))["model"])
    for name, images in sets.items():
        _, probs = score_selection(model, head, images, device, cfg)
        write_predictions(images.frame, probs, run.predictions(name))


def adam_impl(name: str, device) -> dict:
    """Adam keyword for the implementation: fused kernels on CUDA by default, torch's choice elsewhere."""
    if name == "auto":
        return {"fused": True} if device.type == "cuda" else {}
    return {"fused": {"fused": True}, "foreach": {"foreach": True}, "for-loop": {"foreach": False}}[name]


def config_record(cfg: TrainConfig, policy, n_train: int, n_valid: int, world: int) -> dict:
    return {
        **dataclasses.asdict(cfg),
        "lr_effective": effective_lr(cfg),
        "policy_resolved": policy.describe(),
        "head": policy.head,
        "train_images": n_train,
        "valid_images": n_valid,
        "world_size": world,
        "versions": {
            "chexutils": __version__,
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "python": sys.version.split()[0],
        },
    }


def check_leakage(cfg: TrainConfig, chexpert_dir: Path, show: bool = True) -> None:
    """Before any cache is built: refuse a valid CSV sharing patients with the training CSV (unless allowed),
    and one the selection metric cannot score (``check_selectable``)."""
    train_csv, valid_csv = (
        csv_or_default(cfg.train_csv, chexpert_dir / "train.csv"),
        csv_or_default(cfg.valid_csv, chexpert_dir / "valid.csv"),
    )
    valid = read_chexpert(valid_csv, chexpert_dir.parent, check_files=False)
    check_patient_overlap(
        read_chexpert(train_csv, chexpert_dir.parent, check_files=False),
        valid,
        train_csv,
        valid_csv,
        cfg.allow_patient_overlap,
    )
    check_selectable(cfg.select_metric, valid, valid_csv, show)


def check_selectable(select_metric: str, valid: pd.DataFrame, valid_csv, show: bool = True) -> None:
    """``valid_auroc_tasks`` needs a competition task whose selection studies hold a certain positive and a
    certain negative: with none, AUROC is undefined every epoch and best.pt would silently be epoch 1 (a
    DataError, before any work); tasks with one class only are named in one line and left out of the mean."""
    if select_metric != "valid_auroc_tasks" or valid.empty:
        return
    tasks = list(COMPETITION_TASKS)
    labels, scores = aggregate_studies(valid, np.zeros((len(valid), len(OBSERVATIONS))))
    table = per_observation(labels[tasks], scores[tasks])
    missing = [task for task in tasks if not math.isfinite(float(table.loc[task, "auroc"]))]
    counts = ", ".join(f"{task} {int(table.loc[task, 'positives'])} of {int(table.loc[task, 'n'])}" for task in missing)
    if len(missing) == len(tasks):
        raise DataError(
            f"{valid_csv}: select_metric valid_auroc_tasks cannot score these studies: no competition task has "
            f"both a positive and a negative study (positives: {counts}); set select_metric: valid_loss "
            "or select on a CSV with positives"
        )
    if missing and show:
        print(
            f"note: {valid_csv}: {', '.join(missing)} have one class only among the selection studies "
            f"(positives: {counts}); valid_auroc_tasks averages the other {len(tasks) - len(missing)} task(s)",
            flush=True,
        )


def csv_or_default(given: str, default: Path) -> Path:
    return paths.resolve(given) if given else default


def setup_distributed() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; initialises the process group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_ranks_mean(value: float, device) -> float:
    if not dist.is_initialized():
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.item() / dist.get_world_size()
