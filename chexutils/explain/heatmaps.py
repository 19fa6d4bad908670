"""Grad-CAM heatmaps per observation for a trained run, overlaid on the images as PNGs.

Grad-CAM (Selvaraju et al. 2017, arXiv:1610.02391) weights the last convolutional feature maps
by the spatial mean of the target's gradient, sums them, applies ReLU and upsamples to the image.
We use the ``grad-cam`` library (import ``pytorch_grad_cam``) rather than captum: it is built
around exactly this use (a target layer, per-sample target callables such as ``output[k, 1] -
output[k, 0]`` for the 3-class head, ReLU, per-image min-max scaling and upsampling to the input,
and a colour overlay helper), where captum's ``LayerGradCam`` needs a scalar-output wrapper,
hand-written upsampling/normalisation and its own overlay code.

Targets: the binary head's logit of the observation; the 3-class head's positive-minus-negative
logit difference (the uncertain class left out). Every heatmap is min-max scaled to [0, 1] per
image and observation (the library's ``scale_cam_image``), so it shows *where*, not *how much*.

Speed: all observations of a batch come from ONE trunk forward. A forward hook on the CAM layer
cuts the graph there (nothing before it needs gradients) and repeats its output once per
observation, so only the cheap part after the layer (ReLU, pooling, linear head) runs per target.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import nn

from chexutils.core import paths
from chexutils.core.errors import DataError
from chexutils.core.io import write_table
from chexutils.core.labels import OBSERVATIONS
from chexutils.data.cache import RESIZE_METHODS, load_resized
from chexutils.data.chexpert import read_image
from chexutils.models.backbones import ChexpertNet
from chexutils.scoring.predict import load_run_model

# The one place that names each backbone's Grad-CAM layer: the module whose output is the final
# feature maps (before the pooling that feeds the head). A path of attribute names / indices
# inside ChexpertNet; tests check every registered backbone has one.
CAM_LAYERS: dict[str, str] = {
    "densenet121": "features.trunk.norm5",  # torchvision DenseNet: last BatchNorm after denseblock4
    "xception": "features.trunk.xception.bn4",  # pretrainedmodels Xception: BatchNorm after conv4
    "fractalnet": "features.blocks.-1",  # FractalNet: the last fractal block's final join
    "xrv-densenet121": "features.trunk.norm5",  # an imported torchxrayvision DenseNet121: as densenet121
}
ALPHA = 0.45  # weight of the colour map in an overlay (the image gets 1 - ALPHA)


def cam_layer(model: ChexpertNet) -> nn.Module:
    """The module of ``model`` whose output Grad-CAM explains (looked up in CAM_LAYERS)."""
    if model.backbone_name not in CAM_LAYERS:
        raise KeyError(
            f"no Grad-CAM layer for backbone {model.backbone_name!r}; add it to CAM_LAYERS "
            f"(known: {', '.join(sorted(CAM_LAYERS))})"
        )
    module = model
    for part in CAM_LAYERS[model.backbone_name].split("."):
        module = module[int(part)] if part.lstrip("-").isdigit() else getattr(module, part)
    return module


class ObservationTarget:
    """grad-cam target for one sample's output: the observation's logit, or for the 3-class head
    the positive-minus-negative logit difference."""

    def __init__(self, index: int, head: str):
        self.index, self.head = index, head

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        if self.head == "multiclass":  # output (num_outputs, 3): negative, positive, uncertain
            return output[self.index, 1] - output[self.index, 0]
        return output[self.index]


def observation_indices(observations: Sequence[str] | None) -> list[int]:
    """Column index per observation name (all 14 when None); unknown names are an error."""
    names = list(OBSERVATIONS) if observations is None else list(observations)
    unknown = [o for o in names if o not in OBSERVATIONS]
    if unknown:
        raise ValueError(f"unknown observation(s) {unknown}; expected names from {OBSERVATIONS}")
    return [OBSERVATIONS.index(o) for o in names]


@contextlib.contextmanager
def _cut_and_repeat(model: nn.Module, layer: nn.Module, copies: int):
    """Freeze the weights and make ``layer``'s output a fresh leaf repeated ``copies`` times."""
    flags = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)

    def hook(module, inputs, output):
        return output.detach().repeat(copies, *([1] * (output.ndim - 1))).requires_grad_(True)

    handle = layer.register_forward_hook(hook)  # registered before grad-cam's hooks, so they see its output
    try:
        yield
    finally:
        handle.remove()
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)


def grad_cam(
    model: ChexpertNet, images: torch.Tensor, observations: Sequence[str] | None = None, batch_size: int = 16
) -> np.ndarray:
    """Heatmaps ``(N, K, H, W)`` float32 in [0, 1] for ``images`` (N, 1|3, H, W) and K observations.

    ``images`` are what the model takes (uint8 0..255 or float 0..1, at the run's image size).
    """
    indices = observation_indices(observations)
    if images.ndim != 4:
        raise ValueError(f"expected images of shape (N, C, H, W), got {tuple(images.shape)}")
    if max(indices) >= model.num_outputs:
        raise ValueError(f"model has {model.num_outputs} outputs; cannot explain {observations}")
    device = next(model.parameters()).device
    model.eval()
    k, out = len(indices), []
    layer = cam_layer(model)
    from pytorch_grad_cam import GradCAM  # here, not at the top: it costs ~3 s to import, and 04 rarely needs it

    with _cut_and_repeat(model, layer, k):
        cam = GradCAM(model=model, target_layers=[layer])
        try:
            for start in range(0, len(images), batch_size):
                batch = images[start : start + batch_size].to(device)
                b = len(batch)
                # row j*b + i of the repeated maps is image i explained for observation j
                targets = [ObservationTarget(indices[j], model.head_kind) for j in range(k) for _ in range(b)]
                maps = cam(input_tensor=batch, targets=targets)  # (k*b, H, W)
                out.append(maps.reshape(k, b, *maps.shape[1:]).transpose(1, 0, 2, 3))
        finally:
            cam.activations_and_grads.release()
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, k, *images.shape[-2:]), np.float32)


def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """(H, W, 3) uint8: a grayscale ``image`` (H, W) with ``heatmap`` (any size, [0, 1]) in jet colours.

    The heatmap is stretched to the image (the model saw a square resize of the whole image).
    """
    h, w = image.shape
    if heatmap.shape != (h, w):
        heatmap = resize_heatmap(heatmap, (h, w))
    rgb = np.repeat((image.astype(np.float32) / 255.0)[..., None], 3, axis=2)
    from pytorch_grad_cam.utils.image import show_cam_on_image  # lazy, as in heatmaps_for

    return show_cam_on_image(rgb, np.clip(heatmap, 0.0, 1.0), use_rgb=True, image_weight=1.0 - alpha)


def resize_heatmap(heatmap: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a float heatmap to ``shape`` = (H, W)."""
    img = Image.fromarray(np.asarray(heatmap, np.float32), mode="F")
    return np.asarray(img.resize((shape[1], shape[0]), Image.Resampling.BILINEAR), np.float32)


def _model_and_size(run_or_model, image_size: int | None):
    if isinstance(run_or_model, ChexpertNet):
        if image_size is None:
            raise ValueError("image_size is required when a model (not a run folder) is given")
        return run_or_model, int(image_size), "bilinear", "square"
    model, config = load_run_model(run_or_model)
    size, method = int(image_size or config["image_size"]), config.get("resize_method", "bilinear")
    return model, size, method, config.get("geometry", "square")


def _image_files(images, root) -> list[Path]:
    """Absolute image files from Paths (relative ones against ``root``, the folder above CheXpert-v1.0-*)."""
    if isinstance(images, pd.DataFrame):
        images = images["Path"].tolist()
    base = paths.resolve(root) if root is not None else None
    files = []
    for p in images:
        p = Path(p)
        if not p.is_absolute():
            if base is None:
                raise ValueError(
                    f"relative image path {str(p)!r} needs root= (the folder holding CheXpert-v1.0-small/)"
                )
            p = base / p
        files.append(p)
    return files


def heatmaps_for(
    run_or_model,
    images,
    observations: Sequence[str] | None = None,
    root=None,
    image_size: int | None = None,
    batch_size: int = 16,
) -> np.ndarray:
    """Heatmaps (N, K, S, S) at the model's input size for image files (or Paths under ``root``)."""
    model, size, method, geometry = _model_and_size(run_or_model, image_size)
    if method not in RESIZE_METHODS:
        raise ValueError(f"unknown resize method {method!r}")
    files = _image_files(images, root)
    batch = (
        torch.from_numpy(np.stack([load_resized(f, size, method, geometry) for f in files]))[:, None]
        if files
        else torch.zeros((0, 1, size, size), dtype=torch.uint8)
    )
    return grad_cam(model, batch, observations, batch_size)


def overlay_for(run_or_model, image_size: int | None = None):
    """The ROC browser's ``overlay(paths, observation)`` for one run: its Grad-CAM over each image."""
    return functools.partial(heatmap_overlays, run_or_model, image_size=image_size)


def heatmap_overlays(
    run_or_model, images, observation: str, root=None, out_dir=None, image_size: int | None = None
) -> list:
    """For the ROC browser's gallery: one observation's overlays of ``images``.

    Returns (H, W, 3) uint8 arrays at each image's own resolution, or, with ``out_dir``, the PNG
    paths written there (see ``write_heatmaps`` for the names).
    """
    if out_dir is not None:
        table = write_heatmaps(run_or_model, images, out_dir, [observation], root=root, image_size=image_size)
        return [Path(p) for p in table["png"]]
    maps = heatmaps_for(run_or_model, images, [observation], root, image_size)
    return [overlay(read_image(f), m[0]) for f, m in zip(_image_files(images, root), maps)]


def png_name(image_path, observation: str) -> str:
    """File name of an overlay: the image's path with '/' as '__', then the observation."""
    stem = str(image_path).replace("\\", "/").strip("/").rsplit(".", 1)[0].replace("/", "__")
    return f"{stem}__{observation.replace(' ', '_')}.png"


def write_heatmaps(
    run_or_model,
    images,
    out_dir,
    observations: Sequence[str] | None = None,
    root=None,
    image_size: int | None = None,
    batch_size: int = 16,
) -> pd.DataFrame:
    """Write one overlay PNG per image and observation into ``out_dir``; returns the index table.

    ``run_or_model``: a run folder (config.json + best.pt) or a ChexpertNet (then ``image_size``).
    ``images``: image files, or CheXpert Paths / a frame with a Path column resolved against
    ``root``. The table (also written as ``out_dir/heatmaps.csv``) has Path, observation, png.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = list(OBSERVATIONS) if observations is None else list(observations)
    keys = images["Path"].tolist() if isinstance(images, pd.DataFrame) else [str(p) for p in images]
    files = _image_files(images, root)
    model, size, method, geometry = _model_and_size(run_or_model, image_size)
    rows = []
    for start in range(0, len(files), batch_size):
        chunk = files[start : start + batch_size]
        batch = torch.from_numpy(np.stack([load_resized(f, size, method, geometry) for f in chunk]))[:, None]
        maps = grad_cam(model, batch, names, batch_size)
        for key, f, per_obs in zip(keys[start : start + batch_size], chunk, maps):
            image = read_image(f)
            for obs, heatmap in zip(names, per_obs):
                png = out_dir / png_name(key, obs)
                _save_png(overlay(image, heatmap), png)
                rows.append({"Path": key, "observation": obs, "png": str(png)})
    table = pd.DataFrame(rows, columns=["Path", "observation", "png"])
    write_table(table, out_dir / "heatmaps.csv", index=False)
    return table


def _save_png(rgb: np.ndarray, path: Path) -> None:
    """Atomic PNG write (temp file + rename)."""
    tmp = path.with_name(path.name + ".tmp")
    Image.fromarray(rgb).save(tmp, format="PNG")
    os.replace(tmp, path)


def read_heatmap_index(out_dir) -> pd.DataFrame:
    """The ``heatmaps.csv`` that ``write_heatmaps`` wrote (DataError when missing or malformed)."""
    path = Path(out_dir) / "heatmaps.csv"
    if not path.is_file():
        raise DataError(f"{path}: file does not exist; expected write_heatmaps' index")
    table = pd.read_csv(path)
    missing = [c for c in ("Path", "observation", "png") if c not in table.columns]
    if missing:
        raise DataError(f"{path} line 1: missing column(s) {missing}; expected Path, observation, png")
    return table
