"""Grad-CAM heatmaps: every backbone has a CAM layer, both heads, batching equals one-at-a-time."""

from collections import OrderedDict

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from pytorch_grad_cam import GradCAM

from chexutils.core.labels import OBSERVATIONS
from chexutils.explain.heatmaps import (
    CAM_LAYERS,
    ObservationTarget,
    cam_layer,
    grad_cam,
    heatmap_overlays,
    overlay,
    read_heatmap_index,
    write_heatmaps,
)
from chexutils.models.backbones import BACKBONES, ChexpertNet, PooledFeatures, build_model, get_backbone
from chexutils.models.fractalnet import FractalNet


def small_fractalnet(head="binary", seed=0) -> ChexpertNet:
    torch.manual_seed(seed)
    net = FractalNet(columns=2, blocks=3, channels=(8, 16, 16))
    return ChexpertNet(get_backbone("fractalnet"), net, net.num_features, head=head).eval()


def test_every_registered_backbone_has_a_cam_layer():
    assert set(BACKBONES) <= set(CAM_LAYERS)


@pytest.mark.parametrize("backbone,size", [("densenet121", 64), ("fractalnet", 32), ("xception", 299)])
def test_each_backbone_and_head_gives_heatmaps_from_its_last_feature_map(backbone, size):
    """The CAM layer's output is the map the head pools; both heads give [0, 1] heatmaps at input size."""
    images = torch.randint(0, 256, (2, 1, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    for head in ("binary", "multiclass"):
        torch.manual_seed(0)
        model = build_model(backbone, head).eval()
        seen = {}
        handle = cam_layer(model).register_forward_hook(lambda module, inputs, output: seen.update(shape=output.shape))
        maps = grad_cam(model, images, ["Cardiomegaly", "Fracture"])
        handle.remove()
        assert len(seen["shape"]) == 4 and seen["shape"][1] == model.classifier.in_features
        assert seen["shape"][-1] < size  # a downsampled feature map, not the input
        assert maps.shape == (2, 2, size, size)
        assert maps.min() >= 0.0 and maps.max() <= 1.0 and maps.max() > 0.5


@pytest.mark.parametrize("head", ["binary", "multiclass"])
def test_batched_all_observations_equal_one_library_call_per_observation(head):
    """The one-forward trick gives the library's plain Grad-CAM, image by image and observation by observation."""
    model = small_fractalnet(head)
    images = torch.randint(0, 256, (3, 1, 32, 32), dtype=torch.uint8)
    names = ["Cardiomegaly", "Pleural Effusion", "Support Devices"]
    maps = grad_cam(model, images, names, batch_size=2)
    assert maps.shape == (3, 3, 32, 32) and maps.dtype == np.float32
    cam = GradCAM(model=model, target_layers=[cam_layer(model)])
    try:
        for j, name in enumerate(names):
            target = ObservationTarget(OBSERVATIONS.index(name), head)
            plain = cam(input_tensor=images, targets=[target] * 3)
            np.testing.assert_allclose(maps[:, j], plain, atol=1e-4)
    finally:
        cam.activations_and_grads.release()
    assert all(p.requires_grad for p in model.parameters())  # weights unfrozen again
    assert not np.allclose(maps[:, 0], maps[:, 2])  # different observations, different maps


def test_multiclass_target_is_positive_minus_negative():
    out = torch.arange(14 * 3, dtype=torch.float32).view(14, 3) ** 2
    k = OBSERVATIONS.index("Edema")
    assert ObservationTarget(k, "multiclass")(out).item() == out[k, 1] - out[k, 0]
    assert ObservationTarget(k, "binary")(torch.arange(14.0)).item() == k


def test_heatmap_follows_a_planted_feature():
    """A 1x1-conv 'DenseNet' whose logits grow with brightness: the heatmap lies on the bright band."""
    trunk = torch.nn.Sequential(OrderedDict(norm5=torch.nn.Conv2d(3, 4, 1)))  # CAM_LAYERS' densenet121 path
    torch.nn.init.constant_(trunk.norm5.weight, 1.0)
    torch.nn.init.zeros_(trunk.norm5.bias)
    model = ChexpertNet(get_backbone("densenet121"), PooledFeatures(trunk), 4).eval()
    torch.nn.init.constant_(model.classifier.weight, 1.0)
    images = torch.zeros((2, 1, 32, 32), dtype=torch.uint8)
    images[:, :, 2:8, 4:28] = 255  # a wide band near the top: catches a transposed map
    maps = grad_cam(model, images, ["Edema", "Support Devices"])
    inside = np.zeros((32, 32), bool)
    inside[2:8, 4:28] = True
    for heat in maps.reshape(-1, 32, 32):
        assert inside[np.unravel_index(heat.argmax(), heat.shape)]
        assert heat[~inside].mean() < 0.1 < heat[inside].mean()


def test_unknown_observation_is_refused():
    with pytest.raises(ValueError, match="unknown observation"):
        grad_cam(small_fractalnet(), torch.zeros(1, 1, 32, 32, dtype=torch.uint8), ["Flu"])


def test_overlay_keeps_the_image_size_and_colours_the_hot_spot():
    image = np.full((40, 50), 128, np.uint8)
    heat = np.zeros((8, 8), np.float32)
    heat[0, 0] = 1.0
    rgb = overlay(image, heat)
    assert rgb.shape == (40, 50, 3) and rgb.dtype == np.uint8
    assert rgb[0, 0, 0] > rgb[-1, -1, 0]  # jet: hot is red, cold is blue


def test_write_heatmaps_writes_one_png_per_image_and_observation(tmp_path):
    root = tmp_path / "data"
    rels = [f"CheXpert-v1.0-small/valid/patient0000{i}/study1/view1_frontal.jpg" for i in range(3)]
    rng = np.random.default_rng(0)
    for rel in rels:
        (root / rel).parent.mkdir(parents=True)
        Image.fromarray(rng.integers(0, 255, (30, 40), dtype=np.uint8), mode="L").save(root / rel)
    model = small_fractalnet()
    table = write_heatmaps(
        model,
        pd.DataFrame({"Path": rels}),
        tmp_path / "out",
        ["Edema", "Fracture"],
        root=root,
        image_size=32,
        batch_size=2,
    )
    assert len(table) == 6 and set(table["observation"]) == {"Edema", "Fracture"}
    for png in table["png"]:
        with Image.open(png) as img:
            assert img.size == (40, 30) and img.mode == "RGB"
    assert read_heatmap_index(tmp_path / "out")["png"].tolist() == table["png"].tolist()
    arrays = heatmap_overlays(model, rels[:2], "Edema", root=root, image_size=32)
    assert [a.shape for a in arrays] == [(30, 40, 3)] * 2
    with pytest.raises(ValueError, match="root="):
        write_heatmaps(model, rels, tmp_path / "x", ["Edema"], image_size=32)
