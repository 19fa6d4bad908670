"""The optimiser and lr schedule of a run: Adam (the original study's) or PESG for the AUC-margin loss.

Adam gets one parameter group, or two when ``head_lr`` gives the classifier its own learning rate
(trunk first: the history's ``lr`` column is the trunk's). ``loss: auc-margin`` trains with PESG,
the proximal epoch stochastic gradient method of Yuan et al. 2021 (ICCV, "Large-scale Robust Deep
AUC Maximization", Algorithm 1; the LibAUC library's ``PESG``), written here from the paper:

    primal  v <- v - lr * (grad_v F + epoch_decay * (v - v_ref) + weight_decay * v)   v = weights, a, b
    dual    alpha <- max(0, alpha + lr * grad_alpha F)                                  gradient ASCENT

and, every ``lr_step_epochs`` epochs (a "stage"), lr x ``lr_gamma`` and the reference point v_ref
set to the average of the stage's iterates (`StageLR`). v_ref starts at the first iterate (v_0).
Differences from LibAUC 2.0 (read for the formulas, not copied): no momentum and no gradient
clipping (Algorithm 1 has neither; LibAUC adds momentum 0.9 and clips gradients at 1.0 by default),
and v_ref starts at v_0 rather than LibAUC's small random draw.
"""

import torch
import torch.distributed as dist

from chexutils.training.config import TrainConfig, effective_lr

# The DeepAUC CheXpert recipe as TrainConfig values (Yuan et al. 2021, ICCV, arXiv:2012.03173, its CheXpert
# section, read with the LibAUC library documentation's CheXpert example). Written from memory, the search
# tool being unavailable for this change: each value says how sure it is; check them before a paper config.
# The DeepAUC recipe on CheXpert (Yuan et al. 2021, ICCV, "Large-scale Robust Deep AUC Maximization").
# Stage-2 values checked against the LibAUC library's own CheXpert example (Optimization-AI/LibAUC,
# examples/scripts/07_optimizing_multi_label_auroc_loss_with_densenet121_on_chexpert.py at commit
# 000ba927493797cbee8cc3137c8a551b0ce334f6): DenseNet121, 224 px frontal images, batch 32, PESG lr 0.1,
# gamma 500 (= 1 / epoch_decay 2e-3), weight decay 1e-5, margin 1.0, 2 epochs with the regulariser
# updated and lr divided by 10 after the first. Stage-1 values are the example's pre-training notebook's
# and were not re-checked against the paper.
DEEPAUC_CHEXPERT = {
    "stage1": {  # cross-entropy pre-training of the whole network
        "loss": "bce",
        "backbone": "densenet121",
        "pretrained": "imagenet",
        "lr": 1e-4,  # Adam (LibAUC's pre-training example; not re-checked against the paper)
        "weight_decay": 1e-5,
        "batch_size": 32,
        "image_size": 224,
    },
    "stage2": {  # AUC-M from the stage-1 trunk, the classifier re-initialised
        "loss": "auc-margin",
        "reinit_head": True,  # the paper re-initialises the classifier before the AUC-M stage
        "auc_margin": 1.0,
        "lr": 0.1,  # PESG
        "auc_epoch_decay": 2e-3,  # LibAUC's gamma = 500
        "weight_decay": 1e-5,
        "epochs": 2,
        "lr_step_epochs": 1,  # decay_factor 10 after the first epoch
        "lr_gamma": 0.1,
        "batch_size": 32,
        "image_size": 224,
    },
}


class PESG(torch.optim.Optimizer):
    """PESG over model parameter groups plus the AUC-M variables (a, b minimised; alpha maximised).

    ``variables`` = (a, b, alpha) of `chexutils.training.losses.AUCMargin`; their values are part of
    ``state_dict()`` so a resumed run continues with them. Under DistributedDataParallel the
    variables' gradients are averaged over the ranks (the model's are averaged by DDP)."""

    def __init__(self, groups, variables, lr: float, epoch_decay: float = 2e-3, weight_decay: float = 0.0):
        a, b, alpha = variables
        groups = [dict(g) if isinstance(g, dict) else {"params": list(g)} for g in groups]
        groups += [{"params": [a, b]}, {"params": [alpha], "ascent": True, "weight_decay": 0.0, "epoch_decay": 0.0}]
        defaults = {"lr": lr, "epoch_decay": epoch_decay, "weight_decay": weight_decay, "ascent": False}
        super().__init__(groups, defaults)
        self.variables = (a, b, alpha)

    @torch.no_grad()
    def step(self, closure=None):
        """One primal descent step (with the proximal term towards v_ref) and one dual ascent step."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if dist.is_initialized():
            for v in self.variables:
                if v.grad is not None:
                    dist.all_reduce(v.grad)
                    v.grad.div_(dist.get_world_size())
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if group["ascent"]:
                    p.add_(p.grad, alpha=group["lr"]).clamp_(min=0.0)
                    continue
                state = self.state[p]
                if "reference" not in state:  # v_ref = v_0, the value before the first update
                    state["reference"] = p.detach().clone()
                    state["iterate_sum"] = torch.zeros_like(p)
                    state["iterates"] = 0
                direction = p.grad.add(p - state["reference"], alpha=group["epoch_decay"])
                if group["weight_decay"]:
                    direction.add_(p, alpha=group["weight_decay"])
                p.add_(direction, alpha=-group["lr"])
                state["iterate_sum"].add_(p)
                state["iterates"] += 1
        return loss

    @torch.no_grad()
    def new_stage(self) -> None:
        """v_ref <- the average of this stage's iterates (parameters not updated in it keep theirs)."""
        for state in self.state.values():
            if state.get("iterates"):
                state["reference"].copy_(state["iterate_sum"] / state["iterates"])
                state["iterate_sum"].zero_()
                state["iterates"] = 0

    def state_dict(self):
        return {**super().state_dict(), "auc_variables": [v.detach().clone() for v in self.variables]}

    def load_state_dict(self, state_dict):
        state_dict = dict(state_dict)
        values = state_dict.pop("auc_variables")
        super().load_state_dict(state_dict)
        with torch.no_grad():
            for v, saved in zip(self.variables, values):
                v.copy_(saved)


class StageLR(torch.optim.lr_scheduler.StepLR):
    """StepLR that also starts a new PESG stage (v_ref <- the stage's average) whenever it decays the lr."""

    def step(self, epoch=None):
        super().step() if epoch is None else super().step(epoch)
        if self.last_epoch > 0 and self.last_epoch % self.step_size == 0 and isinstance(self.optimizer, PESG):
            self.optimizer.new_stage()


def parameter_groups(cfg: TrainConfig, model) -> list[dict]:
    """One group (all parameters, the effective lr), or trunk + classifier when ``head_lr`` is set."""
    lr = effective_lr(cfg)
    if not cfg.head_lr:
        return [{"params": list(model.parameters()), "lr": lr}]
    scale = lr / cfg.lr  # the batch-size scaling of lr_scale_rule applies to the head's lr too
    return [
        {"params": list(model.features.parameters()), "lr": lr},
        {"params": list(model.classifier.parameters()), "lr": cfg.head_lr * scale},
    ]


def build_optimizer(cfg: TrainConfig, model, criterion, adam_options: dict):
    """(optimiser, lr scheduler) for ``cfg``: PESG + StageLR for the AUC-margin loss, else Adam + StepLR."""
    groups = parameter_groups(cfg, model)
    if criterion.variables:
        optimizer = PESG(
            groups,
            criterion.variables,
            lr=effective_lr(cfg),
            epoch_decay=cfg.auc_epoch_decay,
            weight_decay=cfg.weight_decay,
        )
        return optimizer, StageLR(optimizer, step_size=cfg.lr_step_epochs, gamma=cfg.lr_gamma)
    optimizer = torch.optim.Adam(groups, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay, **adam_options)
    return optimizer, torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.lr_step_epochs, gamma=cfg.lr_gamma)
