"""Masked losses and output probabilities for the two heads a policy can ask for.

binary: (B, 14) logits, BCE-with-logits per entry (soft targets allowed).
multiclass: (B, 14, 3) logits over {negative, positive, uncertain}, cross-entropy per observation;
its probability of a finding is p1 / (p0 + p1), the uncertain class dropped (the original study's definition).
Both losses average over the entries the mask keeps: sum(loss * mask) / max(sum(mask), 1).

`LOSSES` is the registry `TrainConfig.loss` names: ``bce`` (the above), ``weighted-bce`` and
``auc-margin`` (AUC-M, Yuan et al. 2021, optimised by `chexutils.training.optim.PESG`).
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from chexutils.core.labels import BINARY, MULTICLASS, MULTICLASS_CLASSES, OBSERVATIONS, check_head

N_CLASSES = len(MULTICLASS_CLASSES)


def masked_loss(logits: torch.Tensor, values, mask, head: str) -> torch.Tensor:
    """Scalar loss over the kept entries; a fully masked batch gives 0 (not NaN) with a defined gradient."""
    check_head(head)
    values = torch.as_tensor(values, device=logits.device)
    mask = torch.as_tensor(mask, device=logits.device).to(logits.dtype)
    keep = mask > 0
    if head == BINARY:
        _check_shape(logits.shape, values.shape, mask.shape, tuple(values.shape))
        targets = torch.where(keep, values.to(logits.dtype), torch.zeros((), dtype=logits.dtype, device=logits.device))
        loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    else:
        _check_shape(logits.shape, values.shape, mask.shape, (*values.shape, N_CLASSES))
        targets = torch.where(keep, values.long(), torch.zeros((), dtype=torch.long, device=logits.device))
        loss = F.cross_entropy(logits.movedim(-1, 1), targets, reduction="none")  # (B, 3, 14) -> (B, 14)
    return (loss * mask).sum() / mask.sum().clamp_min(1.0)


def chance_loss(head: str) -> float:
    """The loss of a model that knows nothing (every logit 0), whatever the targets: ln 2 per kept entry
    for the binary head, ln 3 for the three-class head. The scale divergence is measured against."""
    return math.log(2) if check_head(head) == BINARY else math.log(N_CLASSES)


def _check_shape(logits, values, mask, expected) -> None:
    if tuple(logits) != tuple(expected) or tuple(values) != tuple(mask):
        raise ValueError(
            f"shape mismatch: logits {tuple(logits)} (expected {tuple(expected)}), "
            f"values {tuple(values)}, mask {tuple(mask)}"
        )


# --- the loss registry: what `TrainConfig.loss` names -----------------------------------------
#
# A training loss is built once per run from the training split's targets (weighted-bce and
# auc-margin need the per-observation prevalence) and called as ``loss(logits, values, mask)``.
# Each entry declares the policy heads it accepts; `check_loss` (called by the config checks)
# refuses any other policy with the entry's reason.


def prevalence(values, mask) -> tuple[torch.Tensor, torch.Tensor]:
    """Per observation: (positive mass, negative mass) over the kept entries of the training targets.

    Soft targets (label smoothing, a teacher's probability) count as ``t`` positive and ``1 - t`` negative."""
    values = torch.as_tensor(values, dtype=torch.float64)
    mask = torch.as_tensor(mask, dtype=torch.float64)
    return (values * mask).sum(0), ((1 - values) * mask).sum(0)


class TrainLoss:
    """Base: a callable ``(logits, values, mask) -> scalar`` plus what config.json records about it."""

    name = ""
    head = BINARY  # the head it trains (the divergence check's chance-level loss depends on it)
    variables: tuple = ()  # tensors the optimiser updates besides the model's (AUC-M: a, b, alpha)

    def __call__(self, logits: torch.Tensor, values, mask) -> torch.Tensor:
        raise NotImplementedError

    def to(self, device) -> "TrainLoss":
        """Move the loss's own tensors to ``device`` (before the optimiser is built)."""
        return self

    def describe(self) -> dict:
        """Name and resolved settings (JSON-serialisable), for config.json's ``loss_resolved``."""
        return {"name": self.name}


class MaskedBCE(TrainLoss):
    """Today's loss: `masked_loss` (BCE per entry, or cross-entropy for the multiclass head)."""

    name = "bce"

    def __init__(self, head: str):
        self.head = head

    def __call__(self, logits, values, mask):
        return masked_loss(logits, values, mask, self.head)


class WeightedBCE(TrainLoss):
    """BCE with ``pos_weight`` per observation = negatives / positives of the (masked) training targets.

    An observation with no positive (or no negative) training target gets weight 1 (nothing to balance)."""

    name = "weighted-bce"

    def __init__(self, values, mask):
        positives, negatives = prevalence(values, mask)
        ratio = negatives / positives.clamp_min(1e-12)
        self.pos_weight = torch.where((positives > 0) & (negatives > 0), ratio, torch.ones_like(ratio)).float()

    def to(self, device):
        self.pos_weight = self.pos_weight.to(device)
        return self

    def __call__(self, logits, values, mask):
        values = torch.as_tensor(values, device=logits.device)
        mask = torch.as_tensor(mask, device=logits.device).to(logits.dtype)
        _check_shape(logits.shape, values.shape, mask.shape, tuple(values.shape))
        targets = torch.where(
            mask > 0, values.to(logits.dtype), torch.zeros((), dtype=logits.dtype, device=logits.device)
        )
        loss = F.binary_cross_entropy_with_logits(
            logits, targets, pos_weight=self.pos_weight.to(logits.device, logits.dtype), reduction="none"
        )
        return (loss * mask).sum() / mask.sum().clamp_min(1.0)

    def describe(self):
        return {"name": self.name, "pos_weight": dict(zip(OBSERVATIONS, map(float, self.pos_weight)))}


class AUCMargin(TrainLoss):
    """The AUC-margin (AUC-M) square loss of Yuan et al. 2021 (ICCV, "Large-scale Robust Deep AUC
    Maximization: A New Surrogate Loss and Empirical Studies on Medical Image Classification",
    arXiv:2012.03173; the LibAUC library's ``AUCMLoss``, its "v1" form with the class prior p).

    Per observation k, with score h = sigmoid(logit), imbalance ratio p = the training prevalence,
    margin m, primal variables a, b and the dual variable alpha >= 0 (all per observation):

        F_k = E[(1-p) (h-a)^2 [y=1] + p (h-b)^2 [y=0] + 2 alpha (p h [y=0] - (1-p) h [y=1])]
              + 2 alpha p (1-p) m - p (1-p) alpha^2

    E is the mean over the batch's kept (unmasked) entries of observation k; the loss is the mean of
    F_k over the observations with a kept entry in the batch. A soft target t (label smoothing)
    counts as t of [y=1] and 1 - t of [y=0]; for targets in {0, 1} this is the paper's formula.
    a, b are minimised and alpha maximised (gradient ascent, clipped at 0) by `PESG`
    (chexutils.training.optim), which takes ``variables``.
    """

    name = "auc-margin"

    def __init__(self, values, mask, margin: float = 1.0):
        positives, negatives = prevalence(values, mask)
        total = positives + negatives
        self.p = torch.where(total > 0, positives / total.clamp_min(1e-12), torch.zeros_like(total)).float()
        self.margin = float(margin)
        k = self.p.numel()
        self.a, self.b, self.alpha = (torch.zeros(k, requires_grad=True) for _ in range(3))

    @property
    def variables(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(a, b, alpha): a and b minimised, alpha maximised."""
        return self.a, self.b, self.alpha

    def to(self, device) -> "AUCMargin":
        """Move p, a, b and alpha to ``device`` (before the optimiser is built)."""
        self.p = self.p.to(device)
        self.a, self.b, self.alpha = (v.detach().to(device).requires_grad_() for v in self.variables)
        return self

    def __call__(self, logits, values, mask):
        values = torch.as_tensor(values, device=logits.device)
        mask = torch.as_tensor(mask, device=logits.device).to(logits.dtype)
        _check_shape(logits.shape, values.shape, mask.shape, tuple(values.shape))
        score = torch.sigmoid(logits)
        pos = torch.where(mask > 0, values.to(logits.dtype), torch.zeros((), dtype=logits.dtype, device=logits.device))
        pos, neg = pos * mask, (1 - pos) * mask  # soft [y=1] and [y=0], zero where masked
        p, a, b, alpha = self.p, self.a, self.b, self.alpha
        kept = mask.sum(0)
        per_entry = (
            (1 - p) * (score - a) ** 2 * pos
            + p * (score - b) ** 2 * neg
            + 2 * alpha * (p * score * neg - (1 - p) * score * pos)
        )
        per_class = per_entry.sum(0) / kept.clamp_min(1.0) + p * (1 - p) * (2 * alpha * self.margin - alpha**2)
        present = (kept > 0).to(logits.dtype)
        return (per_class * present).sum() / present.sum().clamp_min(1.0)

    def describe(self):
        return {
            "name": self.name,
            "margin": self.margin,
            "imbalance_ratio": dict(zip(OBSERVATIONS, map(float, self.p))),
        }


@dataclass(frozen=True)
class LossSpec:
    """A registry entry: the policy heads the loss accepts, and why it refuses the others."""

    name: str
    heads: tuple[str, ...]
    refusal: str  # why a policy with another head is refused
    description: str


LOSSES: dict[str, LossSpec] = {
    spec.name: spec
    for spec in (
        LossSpec("bce", (BINARY, MULTICLASS), "", "masked BCE (cross-entropy per observation for U-MultiClass)"),
        LossSpec(
            "weighted-bce",
            (BINARY,),
            "it weighs the positive term of a binary BCE; the three-class head has no single positive term",
            "masked BCE with pos_weight = negatives / positives per observation (training prevalence)",
        ),
        LossSpec(
            "auc-margin",
            (BINARY,),
            "AUC-M ranks one sigmoid score per observation against targets in [0, 1]; the three-class head "
            "(14 x 3 logits) has no such score",
            "AUC-margin square loss with the PESG optimiser (Yuan et al. 2021)",
        ),
    )
}


def accepted_policies(loss: str, policies: dict) -> list[str]:
    """The names in a policy registry (``{name: class with .head}``) that ``loss`` accepts."""
    return [name for name, policy in policies.items() if policy.head in LOSSES[loss].heads]


def loss_refusal(loss: str, policy_head: str) -> str:
    """'' when ``loss`` accepts a policy with ``policy_head``; else the reason it does not."""
    spec = LOSSES[loss]
    return "" if policy_head in spec.heads else spec.refusal


def build_loss(name: str, head: str, values, mask, margin: float = 1.0) -> TrainLoss:
    """The training loss ``name`` for a policy's ``head``, from the training split's targets and mask."""
    if name not in LOSSES:
        raise KeyError(f"unknown loss {name!r}; known: {', '.join(LOSSES)}")
    reason = loss_refusal(name, head)
    if reason:
        raise ValueError(f"loss {name} does not accept a {head} head: {reason}")
    if name == "bce":
        return MaskedBCE(head)
    if name == "weighted-bce":
        return WeightedBCE(values, mask)
    return AUCMargin(values, mask, margin=margin)
