"""Turn a published chest X-ray DenseNet121 checkpoint into a workbook run folder.

    python -m chexutils import_checkpoint FORMAT CHECKPOINT RUN_DIR [--image-size 224] [--force]

FORMAT is ``torchxrayvision`` (its CheXpert DenseNet121, ``densenet121-res224-chex``) or ``chexnet``
(arnoweng/CheXNet-style: DataParallel ``module.`` prefix, old ``norm.1`` key names, ChestX-ray14
labels). The run folder gets ``config.json`` (a training config plus an ``imported`` record: source
file and its SHA-256, label mapping, what was left out) and ``best.pt`` in the format
``chexutils.training.train`` writes, so evaluation, notebooks 04/05 and ``python -m chexutils predict`` use
it unchanged. Every tensor of the file must be mapped and every weight of the model filled, or the
file is refused with a DataError naming the keys.

Observations the source model does not predict are NOT guessed: their classifier row has weight 0
and bias NaN, so their probability is NaN in every predictions file and ``chexutils.scoring.metrics`` reports
them as "not predicted by this model" instead of an AUROC. Source outputs without a CheXpert
observation of the same name (e.g. Infiltration, Mass) are left out, and listed in config.json.

Preprocessing: the workbook's own (square resize to ``image_size``, grey), then the source's input
scaling: ImageNet mean/std for CheXNet, one channel scaled to [-1024, 1024] for torchxrayvision (the
``xrv-densenet121`` backbone). CheXNet's ten-crop averaging and torchxrayvision's centre crop and
operating-point normalisation (``op_norm``, monotone per output: AUROC/AP unchanged) are not applied;
their values are recorded.
"""

import dataclasses
import hashlib
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from chexutils import __version__
from chexutils.core import locks
from chexutils.core.errors import DataError
from chexutils.core.io import write_json
from chexutils.core.labels import OBSERVATIONS
from chexutils.core.rundir import RunDir
from chexutils.models.backbones import build_model
from chexutils.models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from chexutils.training.config import make_config

# Source label names -> CheXpert observation names, where the name differs but the finding is the same.
ALIASES = {"Effusion": "Pleural Effusion"}

# mlmed/torchxrayvision, torchxrayvision/models.py (commit 3a10ce3), model_urls['chex']["labels"]
# (line 47): the 18 outputs of densenet121-res224-chex; '' = an output not trained on CheXpert.
XRV_CHEX_LABELS = (
    "Atelectasis",
    "Consolidation",
    "",
    "Pneumothorax",
    "Edema",
    "",
    "",
    "Effusion",
    "Pneumonia",
    "",
    "Cardiomegaly",
    "",
    "",
    "",
    "Lung Lesion",
    "Fracture",
    "Lung Opacity",
    "Enlarged Cardiomediastinum",
)

# arnoweng/CheXNet, model.py (commit 288f562), CLASS_NAMES (lines 24-25): ChestX-ray14 order.
CHEXNET_LABELS = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
)

# torchvision 0.2-era DenseNet key names (CheXNet's checkpoint): denselayerN.norm.1 -> denselayerN.norm1;
# CheXNet's own map_state_dict (model.py lines 30-55) renames conv.1/conv.2/norm.1/norm.2 the same way.
OLD_LAYER_NAME = re.compile(r"(denselayer\d+\.)(norm|relu|conv)\.([12])\.")

XRV_EXPORT_HINT = (
    "torchxrayvision publishes whole pickled models, which weights_only=True refuses; export the "
    'state dict once where torchxrayvision is installed: python -c "import torch, torchxrayvision '
    "as xrv; torch.save(xrv.models.DenseNet(weights='densenet121-res224-chex').state_dict(), "
    "'xrv-chex.pt')\""
)


@dataclass(frozen=True)
class Format:
    """One published layout: its backbone here, label order, and how its keys become ours."""

    name: str
    backbone: str
    labels: tuple[str, ...]
    source: str
    preprocessing: str
    export_hint: str = ""


FORMATS = {
    "torchxrayvision": Format(
        "torchxrayvision",
        "xrv-densenet121",
        XRV_CHEX_LABELS,
        "mlmed/torchxrayvision DenseNet(weights='densenet121-res224-chex'), state_dict() export",
        "source: 224 px, centre crop, one channel scaled to [-1024, 1024], op_norm on the sigmoid; "
        "here: the workbook's square resize, the same scaling, plain sigmoid",
        XRV_EXPORT_HINT,
    ),
    "chexnet": Format(
        "chexnet",
        "densenet121",
        CHEXNET_LABELS,
        "arnoweng/CheXNet model.pth.tar (DataParallel(DenseNet121), torchvision 0.2 key names)",
        "source: RGB, Resize(256) + TenCrop(224) averaged, ImageNet mean/std (model.py lines 81-88); "
        "here: the workbook's square resize, grey broadcast to RGB, ImageNet mean/std, one view",
    ),
}


def map_labels(source_labels) -> tuple[dict[int, str], list[str]]:
    """{source output index: CheXpert observation} by name (with ALIASES), and the source names left out."""
    mapping, left_out = {}, []
    for i, name in enumerate(source_labels):
        target = ALIASES.get(name, name)
        if target in OBSERVATIONS:
            mapping[i] = target
        else:
            left_out.append(name or f"(output {i}: untrained)")
    return mapping, left_out


def source_state(path, fmt: Format) -> dict[str, torch.Tensor]:
    """The file's state dict, loaded with weights_only=True (a checkpoint dict's 'state_dict' unwrapped)."""
    try:
        state = load_checkpoint(path)
    except CheckpointError as err:
        raise DataError(f"{err}{'; ' + fmt.export_hint if fmt.export_hint else ''}") from None
    except FileNotFoundError:
        raise DataError(f"{path}: file does not exist; expected a {fmt.name} checkpoint") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DataError(
            f"{path}: not a state dict of tensors (got {type(state).__name__}); expected a {fmt.name} checkpoint"
        )
    return state


def rename(key: str, fmt: Format) -> str | None:
    """Our model's key for a source trunk or classifier key (None: not a weight of ours)."""
    if fmt.name == "chexnet":
        key = key.removeprefix("module.").removeprefix("densenet121.")  # DataParallel, CheXNet's wrapper
        key = OLD_LAYER_NAME.sub(r"\1\2\3.", key)
        key = key.replace("classifier.0.", "classifier.")  # Sequential(Linear, Sigmoid)
    if key.startswith("features."):
        return "features.trunk." + key.removeprefix("features.")
    if key in ("classifier.weight", "classifier.bias"):
        return key
    return None


def convert(state: dict[str, torch.Tensor], fmt: Format, path) -> tuple[nn.Module, dict]:
    """Our model with the source's weights, and the record of what was mapped and left out."""
    model = build_model(fmt.backbone, "binary")
    target = model.state_dict()
    mapped, unexpected, extra = {}, [], {}
    for key, value in state.items():
        ours = rename(key, fmt)
        if ours is None and fmt.name == "torchxrayvision" and key == "op_threshs":
            extra["op_threshs"] = [None if v != v else float(v) for v in value.flatten().tolist()]  # NaN -> null
        elif ours is None or ours not in target:
            unexpected.append(key)
        else:
            mapped[ours] = value
    missing = [k for k in target if k not in mapped and not k.endswith("num_batches_tracked")]
    wrong = [
        f"{k} {tuple(v.shape)} (expected {tuple(target[k].shape)})"
        for k, v in mapped.items()
        if k != "classifier.weight" and k != "classifier.bias" and v.shape != target[k].shape
    ]
    head = mapped.get("classifier.weight")
    if head is not None and (
        head.shape != (len(fmt.labels), target["classifier.weight"].shape[1])
        or mapped.get("classifier.bias", torch.empty(0)).shape != (len(fmt.labels),)
    ):
        wrong.append(f"classifier {tuple(head.shape)} (expected {len(fmt.labels)} outputs: {', '.join(fmt.labels)})")
    if unexpected or missing or wrong:
        parts = [
            f"{len(unexpected)} unexpected key(s) (first: {', '.join(unexpected[:3])})" if unexpected else "",
            f"{len(missing)} missing key(s) (first: {', '.join(missing[:3])})" if missing else "",
            f"wrong shape(s): {'; '.join(wrong[:3])}" if wrong else "",
        ]
        raise DataError(
            f"{path}: does not match the {fmt.name} DenseNet121 layout: "
            f"{'; '.join(p for p in parts if p)}; expected {fmt.source}"
        )
    labels, left_out = map_labels(fmt.labels)
    weight = torch.zeros_like(target["classifier.weight"])
    bias = torch.full_like(target["classifier.bias"], float("nan"))  # not predicted: NaN probability
    for i, observation in labels.items():
        row = OBSERVATIONS.index(observation)
        weight[row], bias[row] = mapped["classifier.weight"][i], mapped["classifier.bias"][i]
    mapped["classifier.weight"], mapped["classifier.bias"] = weight, bias
    for key in target:  # BatchNorm counters (absent in pre-0.4 files) are never used at inference
        mapped.setdefault(key, target[key])
    model.load_state_dict(mapped, strict=True)
    record = {
        "format": fmt.name,
        "source": fmt.source,
        "preprocessing": fmt.preprocessing,
        "source_labels": list(fmt.labels),
        "mapping": {fmt.labels[i]: obs for i, obs in labels.items()},
        "left_out_source_outputs": left_out,
        "not_predicted": [o for o in OBSERVATIONS if o not in labels.values()],
        "not_predicted_means": "probability NaN (classifier weight 0, bias NaN); metrics say 'not predicted'",
        "tensors_mapped": len(state) - len(extra),
        **extra,
    }
    return model, record


def import_checkpoint(format_name: str, checkpoint, run_dir, image_size: int = 224, force: bool = False) -> Path:
    """Write ``run_dir/config.json`` and ``run_dir/best.pt`` from a published checkpoint; returns run_dir.

    A folder that already holds a run (config.json, best.pt, checkpoint.pt or history.csv) is refused
    unless ``force``; then, holding the run's lock (a training into it stops the import), every file of
    the old run is removed (checkpoint.pt, history.csv, predictions, metrics, figures ...) before the new
    best.pt and, last, config.json are written: nothing of the old run is left beside the new one."""

    if format_name not in FORMATS:
        raise DataError(f"unknown checkpoint format {format_name!r}; known: {', '.join(FORMATS)}")
    fmt, checkpoint, run_dir = FORMATS[format_name], Path(checkpoint), Path(run_dir)
    _refuse_existing_run(RunDir(run_dir), force)
    model, record = convert(source_state(checkpoint, fmt), fmt, checkpoint)
    record["file"] = str(checkpoint.resolve())
    record["sha256"] = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    cfg = make_config(backbone=fmt.backbone, image_size=image_size, run_dir=str(run_dir))
    # not trained here (0 epochs) and not a training policy: compare tables show where it came from
    cfg = dataclasses.replace(cfg, epochs=0, policy=f"imported:{fmt.name}")
    config = {
        **dataclasses.asdict(cfg),
        "head": "binary",
        "imported": record,
        "versions": {"chexutils": __version__, "torch": torch.__version__},
    }
    run = RunDir(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with locks.exclusive(run.lock, f"run folder {run_dir}"):
        _refuse_existing_run(run, force)  # again, under the lock: a training may have started meanwhile
        for path in run.run_files():  # config.json first: a crash in between leaves no half-old run
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        save_checkpoint(
            {"model": model.state_dict(), "epoch": -1, "metric": float("nan"), "config": dataclasses.asdict(cfg)},
            run.best,
        )
        write_json(run.config_file, config)  # last: config.json + best.pt together mark a finished run
    return run_dir


def _refuse_existing_run(run: RunDir, force: bool) -> None:
    if run.path.exists() and not run.path.is_dir():
        raise DataError(f"{run.path}: is a file; expected a run folder to create (or, with --force, to replace)")
    if run.holds_run() and not force:
        present = ", ".join(p.name for p in run.run_files() if p.parent == run.path)
        raise DataError(
            f"{run.path}: already holds a run ({present}); importing would mix two models' files. "
            "Use another folder, or --force to replace the whole run"
        )
