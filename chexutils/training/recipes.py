"""Training recipes: one stage (the original study's), DeepAUC's two stages, and hierarchy-aware training.

``TrainConfig.recipe`` names one of ``RECIPES``; a recipe with two stages trains its first
``stage1_epochs`` epochs one way and the rest another, inside ONE run (one folder, one history, resume
across the boundary). best.pt is chosen among the last stage's epochs only, so it is the recipe's model.

- ``single``: every epoch with ``loss`` (and its optimiser: Adam, or PESG for auc-margin).
- ``deepauc`` (Yuan et al. 2021, ICCV, "Large-scale Robust Deep AUC Maximization", arXiv:2012.03173,
  section 5: pre-train with cross-entropy, then optimise the AUC-margin loss with the classifier
  re-initialised): stage 1 is BCE with Adam at ``lr``; at the boundary the classifier is re-initialised
  (seeded by ``seed``) and stage 2 trains with ``loss`` (auc-margin: PESG at ``auc_lr``).
- ``hierarchical`` (Pham et al. 2020, arXiv:1911.06475, "Interpreting chest X-rays via CNNs that exploit
  hierarchical disease dependencies and uncertainty labels", section 3.2, conditional training): stage 1
  trains on the studies whose parent observation (``labels.HIERARCHY``) is positive, stage 2 on all
  studies. In both stages a child's loss is kept only where its parent's target is positive, so the
  child's output learns P(child | parent); at inference ``labels.marginal_from_conditional`` gives
  P(child) = P(child | parent) · P(parent) (every prediction of the run: ``backbones.is_conditional``).
  Pham et al. fine-tune on all data in their second stage; keeping the child's loss conditional there
  too is this workbook's reading, the one under which the product rule is exact.
"""

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from chexutils.core.labels import OBSERVATIONS, PARENT
from chexutils.training.config import TrainConfig
from chexutils.training.losses import build_loss
from chexutils.training.optim import build_optimizer

RECIPES = {
    "single": "every epoch with `loss` (the original study's recipe when loss is bce)",
    "deepauc": "stage 1 BCE + Adam at lr, then the classifier re-initialised and `loss` (Yuan et al. 2021)",
    "hierarchical": "stage 1 on studies with a positive parent, then all; children conditional (Pham et al. 2020)",
}
SEED_OFFSET = 7919  # the re-initialised classifier's generator: seed + this (apart from the model's own draws)


def stage_of(cfg: TrainConfig, epoch: int) -> int:
    """1 for the epochs before ``stage1_epochs`` of a two-stage recipe, else 2 (a single-stage run: 2)."""
    return 1 if cfg.recipe != "single" and epoch < cfg.stage1_epochs else 2


def conditional_mask(values, mask, observations=OBSERVATIONS, parent: dict = PARENT) -> torch.Tensor:
    """The training mask with each child kept only where its parent's target is positive (>= 0.5, kept)."""
    values, mask = torch.as_tensor(values, dtype=torch.float32), torch.as_tensor(mask, dtype=torch.float32)
    column = {name: i for i, name in enumerate(observations)}
    out = mask.clone()
    for child, mother in parent.items():
        if child in column and mother in column:
            positive = (values[:, column[mother]] >= 0.5) & (mask[:, column[mother]] > 0)
            out[:, column[child]] *= positive.float()
    return out


def parent_positive_rows(values, mask, observations=OBSERVATIONS, parent: dict = PARENT) -> np.ndarray:
    """Rows (images) whose target is positive for at least one parent observation: stage 1's studies."""
    values, mask = torch.as_tensor(values, dtype=torch.float32), torch.as_tensor(mask, dtype=torch.float32)
    columns = [observations.index(p) for p in sorted(set(parent.values())) if p in observations]
    positive = ((values[:, columns] >= 0.5) & (mask[:, columns] > 0)).any(1)
    return np.flatnonzero(positive.numpy())


def reinit_classifier(model: nn.Module, seed: int) -> None:
    """A new classifier as ``nn.Linear`` draws one (Kaiming-uniform weights, uniform bias), from its own generator."""
    generator = torch.Generator().manual_seed(seed + SEED_OFFSET)
    head = model.classifier
    with torch.no_grad():
        bound = 1 / math.sqrt(head.in_features)  # what kaiming_uniform_(a=sqrt(5)) gives for a Linear
        weight = torch.rand(head.weight.shape, generator=generator) * 2 * bound - bound
        bias = torch.rand(head.bias.shape, generator=generator) * 2 * bound - bound
        head.weight.copy_(weight.to(head.weight.device))
        head.bias.copy_(bias.to(head.bias.device))


@dataclass
class Stage:
    """What one stage trains with: its loss, optimiser and schedule, training mask and rows (None: all)."""

    number: int
    criterion: object
    optimizer: torch.optim.Optimizer
    scheduler: object
    mask: torch.Tensor
    rows: np.ndarray | None


def stage_config(cfg: TrainConfig, number: int) -> TrainConfig:
    """The config a stage trains with: DeepAUC's stage 1 is BCE with Adam at ``lr``; a stage with loss
    auc-margin trains with PESG at ``auc_lr`` (0: lr; a head_lr scales with it)."""
    if cfg.recipe == "deepauc" and number == 1:
        return dataclasses.replace(cfg, loss="bce")
    if cfg.loss == "auc-margin" and cfg.auc_lr:
        return dataclasses.replace(cfg, lr=cfg.auc_lr, head_lr=cfg.head_lr * cfg.auc_lr / cfg.lr)
    return cfg


def build_stage(cfg: TrainConfig, number: int, model, head: str, values, mask, device, adam_options: dict) -> Stage:
    """Loss, optimiser, scheduler, mask and rows of stage ``number`` (built at its first epoch or on resume)."""
    staged = stage_config(cfg, number)
    criterion = build_loss(staged.loss, head, values, mask, staged.auc_margin).to(device)
    optimizer, scheduler = build_optimizer(staged, model, criterion, adam_options)
    rows = None
    if cfg.recipe == "hierarchical":
        if number == 1:
            rows = parent_positive_rows(values, mask)
        mask = conditional_mask(values, mask)
    return Stage(number, criterion, optimizer, scheduler, torch.as_tensor(mask, dtype=torch.float32), rows)


def describe(cfg: TrainConfig, head: str, values, mask) -> dict:
    """config.json's ``recipe_resolved``: each stage's epochs, loss and rows (built without touching any RNG)."""
    if cfg.recipe == "single":
        return {"name": "single", "stages": [{"epochs": [1, cfg.epochs], "loss": cfg.loss}]}
    stages = []
    for number, epochs in ((1, [1, cfg.stage1_epochs]), (2, [cfg.stage1_epochs + 1, cfg.epochs])):
        staged = stage_config(cfg, number)
        entry = {"epochs": epochs, "loss": staged.loss, "lr": staged.lr}
        if cfg.recipe == "hierarchical":
            rows = parent_positive_rows(values, mask) if number == 1 else np.arange(len(values))
            entry.update(images=int(len(rows)), children="kept where the parent's target is positive")
        if cfg.recipe == "deepauc" and number == 2:
            entry["classifier"] = f"re-initialised at epoch {cfg.stage1_epochs + 1} (seed {cfg.seed} + {SEED_OFFSET})"
        stages.append(entry)
    return {"name": cfg.recipe, "description": RECIPES[cfg.recipe], "stages": stages}
