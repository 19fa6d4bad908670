"""Masked losses and output probabilities for the two heads a policy can ask for.

binary: (B, 14) logits, BCE-with-logits per entry (soft targets allowed).
multiclass: (B, 14, 3) logits over {negative, positive, uncertain}, cross-entropy per observation;
its probability of a finding is p1 / (p0 + p1), the uncertain class dropped (the original study's definition).
Both losses average over the entries the mask keeps: sum(loss * mask) / max(sum(mask), 1).
"""

import math

import torch
import torch.nn.functional as F

from chexutils.core.labels import BINARY, MULTICLASS_CLASSES, check_head

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
