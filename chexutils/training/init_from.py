"""Start a run from another run's weights (``init_from``), and freeze its trunk for a few epochs.

``init_from`` names a run folder (trained here, or written by ``import_checkpoint`` from a published
torchxrayvision / CheXNet checkpoint); its ``best.pt`` fills the new model on a FRESH run only (a
resumed run continues from its own checkpoint.pt). The trunk (``features.*``) is always loaded and
must fit exactly: another backbone, another number of input channels or any other tensor shape is
refused with one DataError naming the file and what was expected. The classifier is kept when its
outputs match (same shape) and ``reinit_head`` is false, else it keeps the new run's own seeded
initialisation; kept rows that are not finite (an imported model's observations it does not predict:
bias NaN) are re-initialised too. What happened is the ``init`` record of config.json.
"""

import hashlib

import torch
from torch import nn

from chexutils.core import paths
from chexutils.core.errors import DataError
from chexutils.core.labels import OBSERVATIONS
from chexutils.core.rundir import RunDir
from chexutils.models.checkpoint import CheckpointError, load_checkpoint
from chexutils.training.config import TrainConfig

TRUNK, HEAD = "features.", "classifier."


def source_file(init_from: str):
    """The best.pt of the ``init_from`` run folder; a DataError when there is none."""
    folder = paths.resolve(init_from)
    best = RunDir(folder).best
    if not best.is_file():
        raise DataError(
            f"{best}: file does not exist; init_from expects a finished (or imported) run folder holding best.pt"
        )
    return best


def input_channels(state: dict) -> tuple[str, int] | None:
    """(key, input channels) of the first convolution weight among the trunk tensors of ``state``."""
    for key, value in state.items():
        if key.startswith(TRUNK) and value.ndim == 4:
            return key, int(value.shape[1])
    return None


def initialise(cfg: TrainConfig, model: nn.Module) -> dict:
    """Load ``cfg.init_from``'s best.pt into ``model`` (trunk always, head when it fits); the ``init`` record."""
    path = source_file(cfg.init_from)
    try:
        saved = load_checkpoint(path, require=("model",))
    except CheckpointError as err:
        raise DataError(str(err)) from None
    weights, source_config = saved["model"], saved.get("config") or {}
    ours = model.state_dict()
    source_backbone = source_config.get("backbone", "unknown")
    _check_trunk(path, weights, ours, source_backbone, cfg.backbone)
    merged = {k: weights[k] if k.startswith(TRUNK) else v for k, v in ours.items()}
    head, reason, rows = _choose_head(weights, ours, cfg.reinit_head)
    if head == "kept":
        for key in (HEAD + "weight", HEAD + "bias"):
            merged[key] = weights[key].clone()
            merged[key][rows] = ours[key][rows]  # not finite in the source: the new run's own init
    model.load_state_dict(merged, strict=True)
    per_row = model.classifier.out_features // len(OBSERVATIONS)
    return {
        "source": str(path),
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "source_backbone": source_backbone,
        "source_policy": source_config.get("policy"),
        "source_epoch": saved.get("epoch"),
        "trunk": f"loaded ({sum(k.startswith(TRUNK) for k in ours)} tensors)",
        "head": head,
        "head_reason": reason,
        "head_rows_reinitialised": sorted({OBSERVATIONS[r // per_row] for r in rows}, key=OBSERVATIONS.index),
    }


def start_record(cfg: TrainConfig, model: nn.Module, run: RunDir) -> dict:
    """The ``init`` record for config.json: loads the source on a fresh run; a resumed run keeps the first record."""
    if not cfg.init_from:
        return {}
    if not run.checkpoint.is_file():
        return initialise(cfg, model)
    try:
        return run.config().get("init") or {"source": cfg.init_from, "note": "resumed; first record not found"}
    except DataError:
        return {"source": cfg.init_from, "note": "resumed; first record not found"}


def _check_trunk(path, weights: dict, ours: dict, source_backbone: str, backbone: str) -> None:
    expected = input_channels(ours)
    found = input_channels(weights)
    channels = f"{expected[1]} input channel(s)" if expected else "its input layer"
    problem = ""
    if source_backbone not in ("unknown", backbone):
        problem = f"trained with backbone {source_backbone}"
    elif expected and found and expected[1] != found[1]:
        problem = f"its input layer {found[0]} takes {found[1]} channel(s)"
    else:
        missing = [k for k in ours if k.startswith(TRUNK) and k not in weights]
        extra = [k for k in weights if k.startswith(TRUNK) and k not in ours]
        wrong = [
            f"{k} {tuple(weights[k].shape)} (expected {tuple(v.shape)})"
            for k, v in ours.items()
            if k.startswith(TRUNK) and k in weights and weights[k].shape != v.shape
        ]
        parts = [
            f"{len(missing)} missing trunk tensor(s) (first {missing[0]})" if missing else "",
            f"{len(extra)} unexpected trunk tensor(s) (first {extra[0]})" if extra else "",
            f"wrong shape(s): {'; '.join(wrong[:2])}" if wrong else "",
        ]
        problem = "; ".join(p for p in parts if p)
    if problem:
        raise DataError(
            f"{path}: init_from refused: {problem}; expected a {backbone} trunk with {channels} "
            f"(this run's backbone; set backbone: {source_backbone} or start from a {backbone} run)"
        )


def _choose_head(weights: dict, ours: dict, reinit: bool) -> tuple[str, str, list[int]]:
    """("kept" | "reinitialised", why, rows of a kept head to re-initialise because they are not finite)."""
    if reinit:
        return "reinitialised", "reinit_head: true", []
    shapes = [tuple(weights[k].shape) if k in weights else None for k in (HEAD + "weight", HEAD + "bias")]
    if shapes != [tuple(ours[HEAD + "weight"].shape), tuple(ours[HEAD + "bias"].shape)]:
        return "reinitialised", f"source classifier {shapes[0]} does not match {tuple(ours[HEAD + 'weight'].shape)}", []
    finite = torch.isfinite(weights[HEAD + "weight"]).all(1) & torch.isfinite(weights[HEAD + "bias"])
    rows = [int(r) for r in torch.nonzero(~finite).flatten()]
    return "kept", "outputs match", rows


def set_trunk_frozen(model: nn.Module, frozen: bool) -> None:
    """Freeze (or unfreeze) ``model.features``: no gradients, and BatchNorm statistics held (eval mode
    whenever the model runs, through a forward pre-hook) so the frozen trunk computes what it loaded."""
    for p in model.features.parameters():
        p.requires_grad_(not frozen)
    handle = getattr(model, "_trunk_freeze_hook", None)
    if frozen and handle is None:
        model._trunk_freeze_hook = model.features.register_forward_pre_hook(_hold_statistics)
    elif not frozen and handle is not None:
        handle.remove()
        model._trunk_freeze_hook = None


def _hold_statistics(module: nn.Module, args) -> None:
    """Forward pre-hook of a frozen trunk: eval mode (BatchNorm uses, and keeps, its running statistics)."""
    module.eval()  # returning None leaves the input as it is
