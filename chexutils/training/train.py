"""Train one model under one uncertainty policy; the run directory is the record.

    python -m chexutils train --config configs/x.yaml [--set key=value ...]
    torchrun --nproc_per_node N -m chexutils train --config FILE     # DistributedDataParallel

In the style of torchvision's references/classification: ``train_one_epoch`` / ``score_selection`` /
``fit``; the checkpoint is a dict with the resolved config; only rank 0 writes. A run whose
``checkpoint.pt`` exists resumes at the next epoch with model, optimiser, scheduler and RNG
state, so a killed run ends with the same numbers as an uninterrupted one. This module is the loop;
the run's bookkeeping (its files, resume, the selection score, the checks before any work) is
``chexutils.training.run_record``, a recipe's stages ``chexutils.training.recipes`` and the on-device
augmentation ``chexutils.training.augment``.

Divergence: every loss the run computes is checked, the training loss (at each host read, see
``loss_sync_every``) and the selection loss (every epoch), and the weights after every epoch. The
run has diverged when a loss is NaN or infinite, when a loss EXPLODES: exceeds ``EXPLODE_FACTOR``
(1000) times the chance-level loss of the head (``losses.chance_loss``: ln 2 per label for the binary
head, ln 3 for the three-class head, the loss of a model whose logits are all 0, so about 693 and
1099), or when a weight or BatchNorm statistic is not finite. The run then stops with
TrainingDiverged naming the epoch, before that epoch's checkpoint.pt / best.pt are written: the last
good checkpoint is kept, and best.pt never holds a diverged model (the CLI: one ``error:`` line, exit 2).
"""

import math
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from chexutils.core import locks, paths
from chexutils.core.devices import autocast, pick_device
from chexutils.core.errors import DataError
from chexutils.core.io import write_json
from chexutils.core.rundir import SELECT, TRAIN, RunDir
from chexutils.data.device_cache import maybe_on_device
from chexutils.data.loader import BatchLoader
from chexutils.models.backbones import build_model
from chexutils.training import recipes
from chexutils.training.augment import Augmentation
from chexutils.training.config import TrainConfig
from chexutils.training.init_from import set_trunk_frozen, start_record
from chexutils.training.losses import chance_loss
from chexutils.training.policies import get_policy
from chexutils.training.run_record import (  # noqa: F401  (HISTORY_COLUMNS, LabelledImages: imported from here too)
    HISTORY_COLUMNS,
    LabelledImages,
    adam_impl,
    all_ranks_mean,
    barrier,
    certain_targets,
    check_leakage,
    config_record,
    csv_or_default,
    kept,
    load_labelled_images,
    resume,
    save_epoch,
    saved_epoch,
    score_selection,
    setup_distributed,
    write_best_predictions,
)

_adam_impl = adam_impl  # the name benchmarks/gpu_step.py imports


EXPLODE_FACTOR = 1e3  # a loss above this many times the chance-level loss has exploded (module docstring)


class TrainingDiverged(RuntimeError):
    """A loss became NaN, infinite or exploded, or a weight stopped being finite; the last good checkpoint
    is left as it was."""


def explode_limit(head: str) -> float:
    """The loss above which training has exploded: EXPLODE_FACTOR x the head's chance-level loss."""
    return EXPLODE_FACTOR * chance_loss(head)


def train_one_epoch(
    model,
    criterion,
    optimizer,
    loader,
    split: LabelledImages,
    device,
    cfg: TrainConfig,
    epoch: int,
    show: bool,
    mask=None,
    augment: Augmentation | None = None,
):
    """One pass over the training batches with ``criterion(logits, values, mask)`` (losses.LOSSES); returns
    mean loss, seconds and images/s.

    The loss is summed on the device and read on the host only every ``cfg.loss_sync_every`` steps
    and at the epoch's end, so the GPU is never stalled waiting for a step's loss. The divergence check
    runs at those reads: a NaN, infinite or exploded loss (``explode_limit``) since the previous read
    stops the run there, before the epoch's checkpoint is written, so the last good checkpoint is kept.
    ``mask``: the stage's training mask (default ``split.mask``); ``augment``: on-device augmentation of
    the uint8 batch (chexutils.training.augment), re-seeded for this epoch.
    """
    model.train()
    loader.set_epoch(epoch)
    mask = split.mask if mask is None else mask
    values, mask = split.values.to(device), mask.to(device)  # targets on the device once per epoch
    if augment is not None and augment.active:
        augment.start_epoch(epoch)
    else:
        augment = None
    total_loss = torch.zeros((), dtype=torch.float32 if device.type == "mps" else torch.float64, device=device)
    total_images, start, checked = 0, time.perf_counter(), 0
    bar = tqdm(loader, total=len(loader), desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not show, mininterval=2)
    step = -1
    for step, (images, rows) in enumerate(bar):
        if cfg.max_steps_per_epoch and step >= cfg.max_steps_per_epoch:
            step -= 1
            break
        images = images.to(device, non_blocking=True)
        if augment is not None:
            images = augment(images)
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
    mean_loss = all_ranks_mean(total_loss.item() / max(total_images, 1), device)
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
    rank, world, local_rank = setup_distributed()
    device = pick_device(cfg.device, local_rank)
    torch.backends.cudnn.benchmark = device.type == "cuda"
    run = RunDir(paths.resolve(cfg.run_dir))
    if rank == 0:
        run.path.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(cfg.seed)  # a run's own seed; the caller's RNG state is restored afterwards
        policy = get_policy(cfg.policy, blank=cfg.blank, **cfg.policy_options)
        chexpert_dir = paths.find_chexpert(cfg.data_dir)
        check_leakage(cfg, chexpert_dir, show=rank == 0)
        train_csv = csv_or_default(cfg.train_csv, chexpert_dir / "train.csv")
        train = load_labelled_images(train_csv, chexpert_dir.parent, cfg, policy.targets, rank)
        valid = load_labelled_images(
            csv_or_default(cfg.valid_csv, chexpert_dir / "valid.csv"),
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
        adam = adam_impl(cfg.adam_impl, device)
        stage_args = (model, policy.head, train.values, train.mask, device, adam)
        stage = recipes.build_stage(cfg, recipes.stage_of(cfg, max(saved_epoch(run.checkpoint), 0)), *stage_args)
        start_epoch, history, best = resume(run.checkpoint, cfg, model, stage.optimizer, stage.scheduler)
        augment = Augmentation.from_config(cfg, device)
        if rank == 0:
            record = config_record(cfg, policy, len(train.frame), len(valid.frame), world)
            extra = {
                "recipe_resolved": recipes.describe(cfg, policy.head, train.values, train.mask),
                "augment_resolved": augment.describe(),
            }
            write_json(run.config_file, {**record, "loss_resolved": stage.criterion.describe(), "init": init, **extra})
        trained = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
        if cfg.compile:
            trained = torch.compile(trained)
        images = maybe_on_device(train.images, device, cfg.cache_on_device)
        loader_args = dict(seed=cfg.seed, workers=cfg.workers, pin_memory=device.type == "cuda", rank=rank, world=world)
        loader = BatchLoader(
            images, cfg.batch_size, shuffle=True, drop_last=cfg.drop_last, subset=stage.rows, **loader_args
        )
        if len(loader) == 0:
            raise DataError(
                f"{train_csv}: {len(train.frame) if stage.rows is None else len(stage.rows)} images give no "
                f"full batch of {cfg.batch_size} (drop_last); lower batch_size or set drop_last false"
            )
        for epoch in range(start_epoch, cfg.epochs):
            first_of_stage = recipes.stage_of(cfg, epoch) != stage.number
            if first_of_stage:  # a recipe's second stage starts: its own loss, optimiser, rows (and head)
                if cfg.recipe == "deepauc":
                    recipes.reinit_classifier(model, cfg.seed)
                stage = recipes.build_stage(cfg, recipes.stage_of(cfg, epoch), *stage_args)
                loader = BatchLoader(
                    images, cfg.batch_size, shuffle=True, drop_last=cfg.drop_last, subset=stage.rows, **loader_args
                )
            lr = stage.optimizer.param_groups[0]["lr"]
            extras = {"mask": stage.mask} if cfg.recipe == "hierarchical" else {}  # the stage's own training mask
            extras.update({"augment": augment} if augment.active else {})
            set_trunk_frozen(model, epoch < cfg.freeze_trunk_epochs)
            try:
                stats = train_one_epoch(
                    trained,
                    stage.criterion,
                    stage.optimizer,
                    loader,
                    train,
                    device,
                    cfg,
                    epoch,
                    show=rank == 0,
                    **extras,
                )
                stage.scheduler.step()
                if rank == 0:
                    scores, _ = score_selection(model, policy.head, valid, device, cfg)
                    check_epoch(model, policy.head, scores, epoch)  # before anything of this epoch is saved
            except TrainingDiverged as err:
                raise TrainingDiverged(
                    f"{run.path}: {err}; stopped, {kept(run, history)} (try a lower lr, in a new run_dir)"
                ) from None
            if rank == 0:
                history.append({"epoch": epoch + 1, **stats, **scores, "lr": lr})
                best = save_epoch(
                    run, cfg, model, stage.optimizer, stage.scheduler, epoch, history, best, first_of_stage
                )
            barrier()
        if rank == 0:
            sets = {SELECT: valid, **({TRAIN: train} if cfg.predict_train else {})}
            write_best_predictions(run, cfg, model, policy.head, sets, device)
    if world > 1:
        dist.destroy_process_group()
    return run.path
