"""Backbone registry and CheXpert classification heads.

A model is a registered backbone (image -> feature vector) plus a linear head: ``binary`` gives
one logit per observation, ``multiclass`` three (negative, positive, uncertain). The model takes
the loader's grayscale batches as they are and does its own scaling and ImageNet normalisation.
Pretrained weights come through the libraries' own loaders into the torch hub cache (downloaded,
with torch.hub's progress bar, when online and not cached); unavailable weights are an error,
never a silent fall-back to random weights.
"""

import pathlib
import pickle

import torch
from torch import nn
from torchvision.models import DenseNet121_Weights, densenet121

from chexutils.core.labels import (
    BINARY,
    MULTICLASS,
    MULTICLASS_CLASSES,
    OBSERVATIONS,
    check_head,
    marginal_from_conditional,
)
from chexutils.models.fractalnet import FractalNet
from chexutils.models.registry import BACKBONES, Backbone, get_backbone, register_backbone

PRETRAINED_CHOICES = (None, "imagenet")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class WeightsUnavailable(RuntimeError):
    """Pretrained weights were asked for but are not in the local cache (or do not exist)."""


def pretrained_cache_dir() -> pathlib.Path:
    """Where pretrained weight files are read from: ``torch.hub.get_dir()/checkpoints``."""
    return pathlib.Path(torch.hub.get_dir()) / "checkpoints"


def check_pretrained(pretrained: str | None) -> str | None:
    """Return ``pretrained`` if it is a known choice, else fail listing the choices."""
    if pretrained not in PRETRAINED_CHOICES:
        raise ValueError(f"unknown pretrained={pretrained!r}; choices: {PRETRAINED_CHOICES}")
    return pretrained


def require_cached_weights(backbone: str, fetch=None) -> pathlib.Path:
    """The cached weight file of ``backbone``. If absent, ``fetch()`` (the library's own downloader,
    which writes into the same cache) is tried; offline (an OSError) it is WeightsUnavailable."""
    spec = get_backbone(backbone)
    if spec.pretrained_file is None:
        raise WeightsUnavailable(
            f"no pretrained weights exist for backbone {backbone!r} ({spec.source}); use pretrained=None"
        )
    cache = pretrained_cache_dir()
    path = cache / spec.pretrained_file
    reason = "no download attempted"
    if not path.is_file() and fetch is not None:
        try:
            fetch()
        except OSError as err:  # URLError, connection and DNS failures, timeouts: offline
            reason = f"download failed: {err}"
    if not path.is_file():
        raise WeightsUnavailable(
            f"ImageNet weights for backbone {backbone!r} are not cached: expected file "
            f"{spec.pretrained_file!r} in {cache} (set TORCH_HOME to move the cache); {reason}; "
            f"download it from {spec.pretrained_url} and put it there. Not falling back to random weights."
        )
    return path


def check_weights_only(path: pathlib.Path) -> None:
    """Load ``path`` once with ``weights_only=True``: the libraries' own loads that follow (torchvision
    0.29 and pretrainedmodels 0.7.4 call torch.hub with weights_only=False) then read a file known to
    hold only tensors and plain containers."""
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
        raise WeightsUnavailable(
            f"{path}: refused, not a plain weights file loadable with weights_only=True "
            f"({str(err).splitlines()[0]}); delete it to download it again"
        ) from None


class PooledFeatures(nn.Module):
    """A convolutional trunk followed by ReLU and global average pooling -> (B, C) features."""

    def __init__(self, trunk: nn.Module):
        super().__init__()
        self.trunk = trunk

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Feature vector per image."""
        maps = nn.functional.relu(self.trunk(images))
        return torch.flatten(nn.functional.adaptive_avg_pool2d(maps, 1), 1)


class XceptionTrunk(nn.Module):
    """Wraps pretrainedmodels' ``Xception.features`` (a method, not a module) as a module."""

    def __init__(self, xception: nn.Module):
        super().__init__()
        self.xception = xception

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Xception's last feature maps, before its final ReLU."""
        return self.xception.features(images)


def build_densenet121(pretrained: str | None) -> tuple[nn.Module, int]:
    """torchvision DenseNet121 trunk (1024 features); ImageNet weights via torchvision's API."""
    weights = None
    if pretrained == "imagenet":
        weights = DenseNet121_Weights.IMAGENET1K_V1
        # torchvision's own downloader (its URL, hash check, cache folder, progress bar), weights_only=True
        path = require_cached_weights(
            "densenet121", lambda: weights.get_state_dict(progress=True, check_hash=True, weights_only=True)
        )
        check_weights_only(path)
    net = densenet121(weights=weights)
    return PooledFeatures(net.features), net.classifier.in_features


def import_pretrainedmodels():
    """Import pretrainedmodels lazily (~2 s, ~650 MB) without advancing torch's global RNG."""
    # Workaround: pretrainedmodels' resnext_features modules build two ResNeXt-101 trunks at
    # import time, which consumes torch's RNG; without fork_rng the first seeded build in a
    # process would get different weights from every later one.
    with torch.random.fork_rng(devices=[]):
        import pretrainedmodels
    return pretrainedmodels


def build_xception(pretrained: str | None) -> tuple[nn.Module, int]:
    """pretrainedmodels' Xception trunk (2048 features); ImageNet weights via its own loader."""
    pretrainedmodels = import_pretrainedmodels()
    if pretrained == "imagenet":
        expected = pretrainedmodels.pretrained_settings["xception"]["imagenet"]["url"]
        if expected != BACKBONES["xception"].pretrained_url:  # a different pretrainedmodels version
            raise WeightsUnavailable(
                f"pretrainedmodels expects xception weights from {expected}, "
                f"the registry says {BACKBONES['xception'].pretrained_url}"
            )
        # pretrainedmodels downloads with torch.utils.model_zoo.load_url (= torch.hub.load_state_dict_from_url,
        # weights_only=False); the same function fetches the file first, with weights_only=True
        url = BACKBONES["xception"].pretrained_url
        check_weights_only(
            require_cached_weights(
                "xception",
                lambda: torch.hub.load_state_dict_from_url(url, progress=True, map_location="cpu", weights_only=True),
            )
        )
    net = pretrainedmodels.xception(num_classes=1000, pretrained=pretrained)
    num_features = net.last_linear.in_features
    del net.last_linear  # the ImageNet classifier is replaced by our head
    return PooledFeatures(XceptionTrunk(net)), num_features


def build_fractalnet(pretrained: str | None) -> tuple[nn.Module, int]:
    """FractalNet with the paper's defaults (3 columns, 5 blocks); no pretrained weights exist."""
    if pretrained is not None:
        require_cached_weights("fractalnet")  # always raises: pretrained_file is None
    net = FractalNet()
    return net, net.num_features


register_backbone(
    Backbone(
        name="densenet121",
        build=build_densenet121,
        min_size=32,
        pretrained_file="densenet121-a639ec97.pth",
        pretrained_url="https://download.pytorch.org/models/densenet121-a639ec97.pth",
        source="torchvision.models.densenet121 (Huang et al. 2017), weights IMAGENET1K_V1",
    )
)
register_backbone(
    Backbone(
        name="xception",
        build=build_xception,
        min_size=299,
        pretrained_file="xception-43020ad28.pth",
        pretrained_url="http://data.lip6.fr/cadene/pretrainedmodels/xception-43020ad28.pth",
        source="pretrainedmodels.xception 0.7.4 (Chollet 2017), weights ported from Keras by Cadene",
    )
)


class XrvInput(PooledFeatures):
    """DenseNet trunk fed the way torchxrayvision feeds it: ChexpertNet's ImageNet normalisation of the
    grey image is undone and replaced by one channel scaled to [-1024, 1024] (torchxrayvision/utils.py,
    ``normalize``: (2 * img / maxval - 1) * 1024); then ReLU and global average pooling as in
    torchxrayvision's ``DenseNet.features2``."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        grey = images[:, :1] * IMAGENET_STD[0] + IMAGENET_MEAN[0]  # back to [0, 1]
        return super().forward((2.0 * grey - 1.0) * 1024.0)


def xrv_densenet121_features() -> tuple[nn.Module, int]:
    """torchvision's DenseNet121 trunk with a 1-channel stem: torchxrayvision's DenseNet (models.py,
    ``class DenseNet``: conv0 = Conv2d(in_channels=1, 64, 7, stride 2, padding 3, bias=False), the same
    module names as torchvision's) at densenet121 settings."""
    net = densenet121(weights=None)
    net.features.conv0 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return XrvInput(net.features), net.classifier.in_features


def build_xrv_densenet121(pretrained: str | None) -> tuple[nn.Module, int]:
    """torchxrayvision's DenseNet121 (1-channel stem, inputs scaled to [-1024, 1024]); weights come
    only from ``python -m chexutils import_checkpoint``."""
    if pretrained is not None:
        require_cached_weights("xrv-densenet121")  # always raises: pretrained_file is None
    return xrv_densenet121_features()


register_backbone(
    Backbone(
        name="xrv-densenet121",
        build=build_xrv_densenet121,
        min_size=32,
        pretrained_file=None,
        source="torchxrayvision.models.DenseNet (Cohen et al. 2022): DenseNet121, one input channel, "
        "pixels scaled to [-1024, 1024]; published weights via chexutils.training.import_checkpoint",
    )
)
register_backbone(
    Backbone(
        name="fractalnet",
        build=build_fractalnet,
        min_size=32,
        pretrained_file=None,
        source="chexutils.models.fractalnet (Larsson, Maire & Shakhnarovich 2016, arXiv:1605.07648)",
    )
)


def normalise_images(
    images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, min_size: int = 1, backbone: str = ""
) -> torch.Tensor:
    """Loader batches (uint8 0..255 or float 0..1, 1 or 3 channels) as normalised RGB floats on ``mean``'s device.

    The one definition of the model's input step (training, evaluation, prediction and the benchmark).
    """
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected images of shape (B, 1, H, W) or (B, 3, H, W), got {tuple(images.shape)}")
    height, width = images.shape[-2:]
    if min(height, width) < min_size:
        raise ValueError(f"backbone {backbone!r} needs images of at least {min_size}x{min_size}, got {height}x{width}")
    if images.dtype != torch.uint8 and not images.is_floating_point():
        raise ValueError(f"expected uint8 (0..255) or float ([0, 1]) images, got {images.dtype}")
    x = images.to(mean.device, non_blocking=True)  # move the compact uint8 batch, convert on the device
    scale = 255 if x.dtype == torch.uint8 else 1
    x = x.to(mean.dtype) / scale
    x = x.expand(-1, 3, -1, -1)  # grey -> RGB as a view (no-op for 3 channels)
    return (x - mean) / std


def imagenet_constants(device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """ImageNet mean and std as (1, 3, 1, 1) tensors on ``device``."""
    return (
        torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1),
        torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1),
    )


class ChexpertNet(nn.Module):
    """Backbone features + linear head; takes raw loader batches, returns per-observation logits."""

    def __init__(
        self,
        backbone: Backbone,
        features: nn.Module,
        num_features: int,
        head: str = BINARY,
        num_outputs: int = len(OBSERVATIONS),
    ):
        super().__init__()
        check_head(head)
        if num_outputs < 1:
            raise ValueError(f"num_outputs must be >= 1, got {num_outputs}")
        self.backbone_name = backbone.name
        self.head_kind = head
        self.min_size = backbone.min_size
        self.num_outputs = num_outputs
        self.features = features
        classes = len(MULTICLASS_CLASSES) if head == MULTICLASS else 1
        self.classifier = nn.Linear(num_features, num_outputs * classes)
        # Constants, not learned: buffers follow the model's device but stay out of state dicts.
        for name, values in zip(("mean", "std"), imagenet_constants()):
            self.register_buffer(name, values, persistent=False)

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """Check shape/size, scale to [0, 1], broadcast grey to RGB and apply ImageNet mean/std."""
        return normalise_images(images, self.mean, self.std, self.min_size, self.backbone_name)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits: binary ``(B, num_outputs)``, multiclass ``(B, num_outputs, 3)``."""
        logits = self.classifier(self.features(self.normalise(images)))
        if self.head_kind == MULTICLASS:
            return logits.view(-1, self.num_outputs, len(MULTICLASS_CLASSES))
        return logits


def build_model(
    backbone: str, head: str = BINARY, pretrained: str | None = None, num_outputs: int = len(OBSERVATIONS)
) -> ChexpertNet:
    """Build a ChexpertNet; ``pretrained="imagenet"`` loads cached weights or fails loudly."""
    spec = get_backbone(backbone)
    check_head(head)
    features, num_features = spec.build(check_pretrained(pretrained))
    return ChexpertNet(spec, features, num_features, head=head, num_outputs=num_outputs)


def probabilities(logits: torch.Tensor, head: str, conditional: bool = False) -> torch.Tensor:
    """(B, 14) probability of each finding: sigmoid (binary) or p1 / (p0 + p1) of the softmax (multiclass).

    ``conditional``: the model was trained hierarchy-aware (``recipe: hierarchical``), so a child's output
    is P(child | parent); the product rule (``labels.marginal_from_conditional``) makes it P(child)."""
    check_head(head)
    if head == BINARY:
        probs = torch.sigmoid(logits)
        return marginal_from_conditional(probs) if conditional else probs
    if logits.shape[-1] != len(MULTICLASS_CLASSES):
        raise ValueError(
            f"multiclass logits need a last dimension of {len(MULTICLASS_CLASSES)}, got shape {tuple(logits.shape)}"
        )
    # exp(l1) / (exp(l0) + exp(l1)) == sigmoid(l1 - l0): no overflow, and the class-2 logit cancels.
    return torch.sigmoid(logits[..., 1] - logits[..., 0])


def is_conditional(config: dict) -> bool:
    """Whether a run's outputs are conditional on the parent observation (config.json's ``recipe``)."""
    return config.get("recipe") == "hierarchical"
