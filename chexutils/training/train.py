"""Train one model under one uncertainty policy; the run directory is the record.

    python -m chexutils train --config configs/x.yaml [--set key=value ...]
    torchrun --nproc_per_node N -m chexutils train --config FILE     # DistributedDataParallel

In the style of torchvision's references/classification: ``train_one_epoch`` / ``score_selection`` /
``fit``; the checkpoint is a dict with the resolved config; only rank 0 writes. A run whose
``checkpoint.pt`` exists resumes at the next epoch with model, optimiser, scheduler and RNG
state, so a killed run ends with the same numbers as an uninterrupted one.

Divergence: every loss the run computes is checked, the training loss (at each host read, see
``loss_sync_every``) and the selection loss (every epoch), and the weights after every epoch. The
run has diverged when a loss is NaN or infinite, when a loss EXPLODES: exceeds ``EXPLODE_FACTOR``
(1000) times the chance-level loss of the head (``losses.chance_loss``: ln 2 per label for the binary
head, ln 3 for the three-class head, the loss of a model whose logits are all 0, so about 693 and
1099), or when a weight or BatchNorm statistic is not finite. The run then stops with
TrainingDiverged naming the epoch, before that epoch's checkpoint.pt / best.pt are written: the last
good checkpoint is kept, and best.pt never holds a diverged model (the CLI: one ``error:`` line, exit 2).
"""

import dataclasses
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
import torchvision
from tqdm.auto import tqdm

from chexutils import __version__
from chexutils.core import locks, paths
from chexutils.core.devices import autocast, pick_device
from chexutils.core.errors import DataError
from chexutils.core.io import write_json, write_table
from chexutils.core.labels import COMPETITION_TASKS, MULTICLASS, OBSERVATIONS, certain_only
from chexutils.core.rundir import SELECT, TRAIN, RunDir
from chexutils.data.chexpert import read_chexpert
from chexutils.data.device_cache import maybe_on_device
from chexutils.data.loader import BatchLoader, image_source
from chexutils.models.backbones import build_model, probabilities
from chexutils.models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from chexutils.scoring.aggregate import aggregate_studies
from chexutils.scoring.metrics import per_observation
from chexutils.scoring.predict import predict_logits, write_predictions
from chexutils.training.config import (
    SELECT_METRICS,
    TrainConfig,
    check_patient_overlap,
    config_differences,
    effective_lr,
)
from chexutils.training.init_from import set_trunk_frozen, start_record
from chexutils.training.losses import build_loss, chance_loss, masked_loss
from chexutils.training.optim import build_optimizer
from chexutils.training.policies import Targets, get_policy

HISTORY_COLUMNS = ["epoch", "train_loss", "valid_loss", "valid_auroc_tasks", "lr", "seconds", "images_per_s"]


EXPLODE_FACTOR = 1e3  # a loss above this many times the chance-level loss has exploded (module docstring)


class TrainingDiverged(RuntimeError):
    """A loss became NaN, infinite or exploded, or a weight stopped being finite; the last good checkpoint
    is left as it was."""


def explode_limit(head: str) -> float:
    """The loss above which training has exploded: EXPLODE_FACTOR x the head's chance-level loss."""
    return EXPLODE_FACTOR * chance_loss(head)


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
        frame, cfg.image_size, cfg.resize_method, cfg.use_cache, paths.resolve(cfg.cache_dir), cfg.cache_check
    )
    if rank == 0:
        images = source()
    _barrier()  # other ranks reuse the cache rank 0 built
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


def train_one_epoch(
    model, criterion, optimizer, loader, split: LabelledImages, device, cfg: TrainConfig, epoch: int, show: bool
):
    """One pass over the training batches with ``criterion(logits, values, mask)`` (losses.LOSSES); returns
    mean loss, seconds and images/s.

    The loss is summed on the device and read on the host only every ``cfg.loss_sync_every`` steps
    and at the epoch's end, so the GPU is never stalled waiting for a step's loss. The divergence check
    runs at those reads: a NaN, infinite or exploded loss (``explode_limit``) since the previous read
    stops the run there, before the epoch's checkpoint is written, so the last good checkpoint is kept.
    """
    model.train()
    loader.set_epoch(epoch)
    values, mask = split.values.to(device), split.mask.to(device)  # targets on the device once per epoch
    total_loss = torch.zeros((), dtype=torch.float32 if device.type == "mps" else torch.float64, device=device)
    total_images, start, checked = 0, time.perf_counter(), 0
    bar = tqdm(loader, total=len(loader), desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not show, mininterval=2)
    step = -1
    for step, (images, rows) in enumerate(bar):
        if cfg.max_steps_per_epoch and step >= cfg.max_steps_per_epoch:
            step -= 1
            break
        images = images.to(device, non_blocking=True)
        rows = rows.to(device, non_blocking=True)
        with autocast(device, cfg.amp):
            logits = model(images)
        loss = criterion(logits.float(), values[rows], mask[rows])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total_loss += loss.detach() * len(rows)
        total_images += len(rows)
        if (step + 1) % cfg.loss_sync_every == 0:
            checked = _check_loss(total_loss, total_images, criterion.head, epoch, checked, step)
            bar.set_postfix(
                loss=f"{total_loss.item() / total_images:.4f}",
                img_s=f"{total_images / (time.perf_counter() - start):.1f}",
            )
    _check_loss(total_loss, total_images, criterion.head, epoch, checked, step)
    seconds = time.perf_counter() - start
    mean_loss = _all_ranks_mean(total_loss.item() / max(total_images, 1), device)
    return {"train_loss": mean_loss, "seconds": seconds, "images_per_s": total_images / seconds}


def _check_loss(total_loss: torch.Tensor, images: int, head: str, epoch: int, checked: int, step: int) -> int:
    """Read the summed loss (a host sync); raise TrainingDiverged when a step since ``checked`` made the
    loss not finite, or the mean loss so far exploded (above ``explode_limit``)."""
    value = total_loss.item()
    where = f"at epoch {epoch + 1}, between steps {checked + 1} and {step + 1}"
    if not math.isfinite(value):
        raise TrainingDiverged(f"training loss became {value} {where}")
    mean, limit = value / max(images, 1), explode_limit(head)
    if mean > limit:
        raise TrainingDiverged(
            f"training loss exploded to {mean:.4g} {where} (above {limit:.4g}, "
            f"{EXPLODE_FACTOR:g} x the chance-level loss {chance_loss(head):.4f})"
        )
    return step + 1


def check_epoch(model, head: str, scores: dict, epoch: int) -> None:
    """After an epoch: the selection loss finite and not exploded, every weight and buffer finite."""
    loss, limit = scores["valid_loss"], explode_limit(head)
    if not math.isfinite(loss):
        raise TrainingDiverged(f"selection loss (valid_loss) became {loss} at epoch {epoch + 1}")
    if loss > limit:
        raise TrainingDiverged(
            f"selection loss (valid_loss) exploded to {loss:.4g} at epoch {epoch + 1} (above {limit:.4g}, "
            f"{EXPLODE_FACTOR:g} x the chance-level loss {chance_loss(head):.4f})"
        )
    bad = [
        name for name, value in model.state_dict().items() if value.is_floating_point() and not value.isfinite().all()
    ]
    if bad:
        raise TrainingDiverged(
            f"{len(bad)} weight tensor(s) became NaN or infinite at epoch {epoch + 1} (first: {bad[0]})"
        )


def score_selection(model, head, split: LabelledImages, device, cfg: TrainConfig) -> tuple[dict, np.ndarray]:
    """Loss on certain labels and study-level (max over views) mean AUROC over the 5 tasks, for choosing best.pt.

    The history columns keep their names ``valid_loss`` / ``valid_auroc_tasks`` (``select_metric`` values).
    """
    loader = BatchLoader(split.images, cfg.batch_size * 2, workers=cfg.workers)
    logits = predict_logits(model, loader, len(split.frame), device, cfg.amp)
    loss = masked_loss(logits, split.values, split.mask, head).item()
    probs = probabilities(logits, head).numpy()
    labels, study_probs = aggregate_studies(split.frame, probs)
    auroc = per_observation(labels, study_probs).loc[list(COMPETITION_TASKS), "auroc"].astype(float)
    return {"valid_loss": loss, "valid_auroc_tasks": float(auroc.mean()) if auroc.notna().any() else math.nan}, probs


def fit(cfg: TrainConfig, restart: bool = False) -> Path:
    """Train (or resume) the run ``cfg.run_dir``, holding its lock; returns the run directory.

    A second process training into the same folder stops with a FolderLocked error naming the
    holder. ``restart=True`` deletes the folder's training state first (``--force`` retrains)."""
    if int(os.environ.get("RANK", "0")) != 0:  # only rank 0 writes the run folder
        return _fit(cfg)
    run = RunDir(paths.resolve(cfg.run_dir))
    with locks.exclusive(run.lock, f"run folder {run.path}"):
        if restart:
            for path in (run.checkpoint, run.best, run.history):
                path.unlink(missing_ok=True)
        return _fit(cfg)


def _fit(cfg: TrainConfig) -> Path:
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)  # the recorded count, not whatever this process was started with
    try:
        return _fit_with_threads(cfg)
    finally:
        torch.set_num_threads(threads)


def _fit_with_threads(cfg: TrainConfig) -> Path:
    rank, world, local_rank = _setup_distributed()
    device = pick_device(cfg.device, local_rank)
    torch.backends.cudnn.benchmark = device.type == "cuda"
    run = RunDir(paths.resolve(cfg.run_dir))
    if rank == 0:
        run.path.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(cfg.seed)  # a run's own seed; the caller's RNG state is restored afterwards
        policy = get_policy(cfg.policy, blank=cfg.blank, **cfg.policy_options)
        chexpert_dir = paths.find_chexpert(cfg.data_dir)
        _check_leakage(cfg, chexpert_dir, show=rank == 0)
        train_csv = _csv(cfg.train_csv, chexpert_dir / "train.csv")
        train = load_labelled_images(train_csv, chexpert_dir.parent, cfg, policy.targets, rank)
        valid = load_labelled_images(
            _csv(cfg.valid_csv, chexpert_dir / "valid.csv"),
            chexpert_dir.parent,
            cfg,
            certain_targets(policy.head),
            rank,
        )
        model = build_model(cfg.backbone, policy.head, cfg.pretrained)
        init = start_record(cfg, model, run)  # init_from: loads its best.pt on a fresh run only
        model = model.to(device)
        if cfg.channels_last and device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        criterion = build_loss(cfg.loss, policy.head, train.values, train.mask, cfg.auc_margin).to(device)
        optimizer, scheduler = build_optimizer(cfg, model, criterion, _adam_impl(cfg.adam_impl, device))
        start_epoch, history, best = _resume(run.checkpoint, cfg, model, optimizer, scheduler)
        if rank == 0:
            record = _config_record(cfg, policy, len(train.frame), len(valid.frame), world)
            write_json(run.config_file, {**record, "loss_resolved": criterion.describe(), "init": init})
        trained = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
        if cfg.compile:
            trained = torch.compile(trained)
        loader = BatchLoader(
            maybe_on_device(train.images, device, cfg.cache_on_device),
            cfg.batch_size,
            shuffle=True,
            seed=cfg.seed,
            workers=cfg.workers,
            pin_memory=device.type == "cuda",
            rank=rank,
            world=world,
            drop_last=cfg.drop_last,
        )
        if len(loader) == 0:
            raise DataError(
                f"{train_csv}: {len(train.frame)} images give no "
                f"full batch of {cfg.batch_size} (drop_last); lower batch_size or set drop_last false"
            )
        for epoch in range(start_epoch, cfg.epochs):
            lr = optimizer.param_groups[0]["lr"]
            set_trunk_frozen(model, epoch < cfg.freeze_trunk_epochs)
            try:
                stats = train_one_epoch(
                    trained, criterion, optimizer, loader, train, device, cfg, epoch, show=rank == 0
                )
                scheduler.step()
                if rank == 0:
                    scores, _ = score_selection(model, policy.head, valid, device, cfg)
                    check_epoch(model, policy.head, scores, epoch)  # before anything of this epoch is saved
            except TrainingDiverged as err:
                raise TrainingDiverged(
                    f"{run.path}: {err}; stopped, {_kept(run, history)} (try a lower lr, in a new run_dir)"
                ) from None
            if rank == 0:
                history.append({"epoch": epoch + 1, **stats, **scores, "lr": lr})
                best = _save_epoch(run, cfg, model, optimizer, scheduler, epoch, history, best)
            _barrier()
        if rank == 0:
            sets = {SELECT: valid, **({TRAIN: train} if cfg.predict_train else {})}
            _write_predictions(run, cfg, model, policy.head, sets, device)
    if world > 1:
        dist.destroy_process_group()
    return run.path


def _kept(run: RunDir, history: list) -> str:
    """What a diverged run leaves: its last good checkpoint, or nothing when the first epoch diverged."""
    if not history:
        return "nothing saved (it diverged in its first epoch)"
    return f"the last good {run.checkpoint.name} (epoch {history[-1]['epoch']}) and {run.best.name} are kept"


def _save_epoch(run: RunDir, cfg, model, optimizer, scheduler, epoch: int, history: list, best: float) -> float:
    """history.csv, best.pt when the selection metric improved, then checkpoint.pt (all atomic)."""
    write_table(pd.DataFrame(history)[HISTORY_COLUMNS], run.history, index=False)
    metric = SELECT_METRICS[cfg.select_metric] * history[-1][cfg.select_metric]  # higher is better
    config = dataclasses.asdict(cfg)
    if metric > best or not run.best.is_file():
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


def _resume(path: Path, cfg: TrainConfig, model, optimizer, scheduler) -> tuple[int, list, float]:
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


def _write_predictions(run: RunDir, cfg, model, head, sets: dict, device) -> None:
    """predictions_<set>.csv from the best checkpoint's weights."""
    model.load_state_dict(load_checkpoint(run.best, map_location=device, require=("model",))["model"])
    for name, images in sets.items():
        _, probs = score_selection(model, head, images, device, cfg)
        write_predictions(images.frame, probs, run.predictions(name))


def _adam_impl(name: str, device) -> dict:
    """Adam keyword for the implementation: fused kernels on CUDA by default, torch's choice elsewhere."""
    if name == "auto":
        return {"fused": True} if device.type == "cuda" else {}
    return {"fused": {"fused": True}, "foreach": {"foreach": True}, "for-loop": {"foreach": False}}[name]


def _config_record(cfg: TrainConfig, policy, n_train: int, n_valid: int, world: int) -> dict:
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


def _check_leakage(cfg: TrainConfig, chexpert_dir: Path, show: bool = True) -> None:
    """Before any cache is built: refuse a valid CSV sharing patients with the training CSV (unless allowed),
    and one the selection metric cannot score (``check_selectable``)."""
    train_csv, valid_csv = (
        _csv(cfg.train_csv, chexpert_dir / "train.csv"),
        _csv(cfg.valid_csv, chexpert_dir / "valid.csv"),
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


def _csv(given: str, default: Path) -> Path:
    return paths.resolve(given) if given else default


def _setup_distributed() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; initialises the process group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def _all_ranks_mean(value: float, device) -> float:
    if not dist.is_initialized():
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.item() / dist.get_world_size()
