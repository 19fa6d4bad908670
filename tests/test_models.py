"""Backbone registry, heads, input handling, offline pretrained loading and FractalNet drop-path."""

import pathlib
import subprocess
import sys
import urllib.error

import pytest
import torch

from chexutils.core.labels import HEADS, OBSERVATIONS
from chexutils.models.backbones import (
    BACKBONES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    Backbone,
    ChexpertNet,
    WeightsUnavailable,
    build_model,
    get_backbone,
    pretrained_cache_dir,
    register_backbone,
)
from chexutils.models.fractalnet import FractalNet

BACKBONE_NAMES = sorted(BACKBONES)
WITH_WEIGHTS = [name for name in BACKBONE_NAMES if BACKBONES[name].pretrained_file]


def grey_batch(size: int, batch: int = 2, seed: int = 0) -> torch.Tensor:
    """A loader-like uint8 batch of shape (batch, 1, size, size)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, 1, size, size), dtype=torch.uint8, generator=generator)


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread per module


@pytest.fixture(scope="module")
def seeded_models():
    """Models built once per (backbone, head) after ``torch.manual_seed(0)``; eval mode only."""
    cache = {}

    def get(name: str, head: str = "binary") -> ChexpertNet:
        if (name, head) not in cache:
            torch.manual_seed(0)
            cache[name, head] = build_model(name, head=head).eval()
        return cache[name, head]

    return get


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    """An empty hub cache under tmp_path, offline (every download fails as without a network); returns its folder."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # in case someone called torch.hub.set_dir

    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    cache = pretrained_cache_dir()
    assert cache == tmp_path / "torch" / "hub" / "checkpoints"
    return cache


def reference_state_dict(name: str, seed: int = 123) -> dict[str, torch.Tensor]:
    """What the real weight file holds: a state dict of the upstream library's own class."""
    torch.manual_seed(seed)
    if name == "densenet121":
        import torchvision

        return torchvision.models.densenet121().state_dict()
    if name == "xception":
        from pretrainedmodels.models.xception import Xception

        return Xception(num_classes=1000).state_dict()
    raise AssertionError(f"no reference weights for {name}")


def trunk_state(model: ChexpertNet) -> dict[str, torch.Tensor]:
    """The backbone trunk's state dict under the upstream library's key names."""
    if model.backbone_name == "densenet121":
        return {f"features.{k}": v for k, v in model.features.trunk.state_dict().items()}
    return model.features.trunk.xception.state_dict()


# --- registry ---------------------------------------------------------------------------------


def test_registry_entries_are_complete():
    assert set(BACKBONES) >= {"densenet121", "xception", "fractalnet"}
    for name, spec in BACKBONES.items():
        assert spec.name == name and spec.min_size > 0 and spec.source
        assert (spec.pretrained_file is None) == (spec.pretrained_url is None)
        if spec.pretrained_file:
            assert spec.pretrained_url.endswith("/" + spec.pretrained_file)


def test_xception_file_matches_pretrainedmodels_settings():
    import pretrainedmodels

    url = pretrainedmodels.pretrained_settings["xception"]["imagenet"]["url"]
    assert BACKBONES["xception"].pretrained_url == url


def test_importing_pretrainedmodels_leaves_torch_rng_alone():
    # Fresh interpreter: pretrainedmodels builds models at import time, which would shift seeds.
    script = (
        "import torch; from chexutils.models.backbones import import_pretrainedmodels; "
        "torch.manual_seed(0); a = torch.rand(3); torch.manual_seed(0); "
        "import_pretrainedmodels(); assert torch.equal(a, torch.rand(3)), 'RNG advanced'"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=pathlib.Path(__file__).resolve().parents[1]
    )
    assert result.returncode == 0, result.stderr


def test_unknown_backbone_lists_known_names():
    with pytest.raises(KeyError) as error:
        get_backbone("resnet9000")
    assert all(name in str(error.value) for name in BACKBONE_NAMES)
    with pytest.raises(KeyError, match="densenet121"):
        build_model("resnet9000")


def test_register_backbone_adds_one_entry_and_refuses_duplicates():
    spec = Backbone(
        name="tiny-fractal",
        min_size=8,
        pretrained_file=None,
        source="test",
        build=lambda pretrained: (FractalNet(columns=1, blocks=2, channels=(4, 8)), 8),
    )
    try:
        register_backbone(spec)
        assert build_model("tiny-fractal")(grey_batch(8)).shape == (2, len(OBSERVATIONS))
        with pytest.raises(ValueError, match="already registered"):
            register_backbone(spec)
    finally:
        BACKBONES.pop("tiny-fractal", None)


def test_bad_head_and_bad_pretrained_choice():
    with pytest.raises(ValueError, match="binary"):
        build_model("fractalnet", head="ordinal")
    with pytest.raises(ValueError, match="imagenet"):
        build_model("fractalnet", pretrained="chexpert")


# --- forward pass and input handling ----------------------------------------------------------


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("name", BACKBONE_NAMES)
def test_forward_at_min_size(name, head, seeded_models):
    spec = get_backbone(name)
    model = seeded_models(name, head)
    assert (model.backbone_name, model.head_kind, model.min_size) == (name, head, spec.min_size)
    with torch.no_grad():
        logits = model(grey_batch(spec.min_size))
    expected = (2, len(OBSERVATIONS)) if head == "binary" else (2, len(OBSERVATIONS), 3)
    assert logits.shape == expected
    assert torch.isfinite(logits).all()
    with pytest.raises(ValueError, match=rf"{name}.*{spec.min_size}"):
        model(grey_batch(spec.min_size)[..., :-1])  # one column short


def test_num_outputs_sets_head_width():
    model = build_model("fractalnet", head="multiclass", num_outputs=5).eval()
    assert model(grey_batch(32)).shape == (2, 5, 3)


def test_uint8_and_float_and_rgb_inputs_agree(seeded_models):
    model = seeded_models("densenet121")
    with torch.no_grad():
        white_uint8 = model(torch.full((2, 1, 32, 32), 255, dtype=torch.uint8))
        white_float = model(torch.ones(2, 1, 32, 32))
        grey = grey_batch(32)
        as_grey = model(grey)
        as_rgb = model(grey.repeat(1, 3, 1, 1))
    assert torch.equal(white_uint8, white_float)
    assert torch.equal(as_grey, as_rgb)


def test_normalisation_uses_imagenet_statistics_and_a_view(monkeypatch):
    model = build_model("fractalnet")
    assert not any(k in model.state_dict() for k in ("mean", "std"))  # constants, not weights
    expanded = []
    original_expand = torch.Tensor.expand

    def recording_expand(tensor, *sizes):
        result = original_expand(tensor, *sizes)
        expanded.append((tensor, result))
        return result

    monkeypatch.setattr(torch.Tensor, "expand", recording_expand)
    monkeypatch.setattr(torch.Tensor, "repeat", lambda *a: pytest.fail("grey -> RGB copied"))
    normalised = model.normalise(torch.full((1, 1, 32, 32), 0.5))
    grey, rgb = expanded[-1]
    assert rgb.shape == (1, 3, 32, 32) and rgb.data_ptr() == grey.data_ptr() and rgb.stride(1) == 0
    for channel, (mean, std) in enumerate(zip(IMAGENET_MEAN, IMAGENET_STD)):
        assert torch.allclose(normalised[:, channel], torch.tensor((0.5 - mean) / std))


@pytest.mark.parametrize(
    "bad", [torch.zeros(2, 32, 32), torch.zeros(2, 2, 32, 32), torch.zeros(2, 1, 32, 32, dtype=torch.int64)]
)
def test_bad_input_shape_or_dtype(bad):
    with pytest.raises(ValueError, match="expected"):
        build_model("fractalnet")(bad)


@pytest.mark.parametrize("name", BACKBONE_NAMES)
def test_construction_is_deterministic(name, seeded_models):
    first = seeded_models(name).state_dict()  # eval-mode forwards leave the state unchanged
    torch.manual_seed(0)
    second = build_model(name).state_dict()
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)


# --- pretrained weights (offline) -------------------------------------------------------------


@pytest.mark.parametrize("name", WITH_WEIGHTS)
def test_pretrained_loads_the_cached_file(name, offline_cache):
    reference = reference_state_dict(name)
    offline_cache.mkdir(parents=True)
    torch.save(reference, offline_cache / BACKBONES[name].pretrained_file)
    torch.manual_seed(999)  # different from the reference seed: only loading can match
    model = build_model(name, head="multiclass", pretrained="imagenet")
    loaded = trunk_state(model)
    expected = {k: v for k, v in reference.items() if not k.startswith(("classifier.", "fc."))}
    assert loaded.keys() == expected.keys()
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)


@pytest.mark.parametrize("name", WITH_WEIGHTS)
def test_missing_weights_fail_fast_with_file_and_folder(name, offline_cache):
    with pytest.raises(WeightsUnavailable) as error:
        build_model(name, pretrained="imagenet")
    message = str(error.value)
    assert BACKBONES[name].pretrained_file in message
    assert str(offline_cache) in message
    assert BACKBONES[name].pretrained_url in message
    assert "download failed" in message and "name resolution" in message


@pytest.mark.parametrize("name", WITH_WEIGHTS)
def test_online_the_library_loader_downloads_into_the_cache(name, offline_cache, monkeypatch):
    reference = reference_state_dict(name)
    downloads = []

    def fake_download(url, dst, hash_prefix=None, progress=True):  # torch.hub's downloader, "online"
        downloads.append((url, pathlib.Path(dst).parent, progress))
        torch.save(reference, dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    torch.manual_seed(999)
    model = build_model(name, pretrained="imagenet")
    assert downloads == [(BACKBONES[name].pretrained_url, offline_cache, True)]  # once, into the hub cache
    assert (offline_cache / BACKBONES[name].pretrained_file).is_file()
    loaded = trunk_state(model)
    assert all(torch.equal(loaded[k], reference[k]) for k in loaded)
    build_model(name, pretrained="imagenet")  # now cached: no second download
    assert len(downloads) == 1


def test_a_cached_file_needing_pickled_objects_is_refused(offline_cache):
    offline_cache.mkdir(parents=True)
    torch.save(torch.nn.Linear(2, 2), offline_cache / BACKBONES["densenet121"].pretrained_file)  # a pickled module
    with pytest.raises(WeightsUnavailable, match="weights_only=True"):
        build_model("densenet121", pretrained="imagenet")


def test_fractalnet_has_no_pretrained_weights(offline_cache):
    with pytest.raises(WeightsUnavailable, match="no pretrained weights exist.*fractalnet"):
        build_model("fractalnet", pretrained="imagenet")


# --- FractalNet ---------------------------------------------------------------------------------


def small_fractalnet(**kwargs) -> FractalNet:
    """A narrow FractalNet that runs in milliseconds."""
    torch.manual_seed(0)
    options = dict(columns=3, blocks=3, channels=(4, 8, 8), drop_path=0.5)
    return FractalNet(**(options | kwargs))


def run_seeded(net: FractalNet, images: torch.Tensor, seed: int) -> torch.Tensor:
    """One forward pass with the global RNG (drop-path's source of randomness) at ``seed``."""
    torch.manual_seed(seed)
    with torch.no_grad():
        return net(images)


def test_drop_path_is_random_in_training_and_off_in_eval():
    net = small_fractalnet()
    images = torch.rand(4, 3, 16, 16)
    assert torch.equal(run_seeded(net, images, 1), run_seeded(net, images, 1))
    assert not torch.equal(run_seeded(net, images, 1), run_seeded(net, images, 2))
    net.eval()
    assert torch.equal(run_seeded(net, images, 1), run_seeded(net, images, 2))


def test_local_drop_path_keeps_at_least_one_input():
    net = small_fractalnet(drop_path=0.99)
    for seed in range(5):
        assert torch.isfinite(run_seeded(net, torch.rand(2, 3, 16, 16), seed)).all()


def test_global_drop_path_uses_one_column_throughout():
    net = small_fractalnet(global_drop_ratio=1.0)
    for seed in range(4):
        net.zero_grad(set_to_none=True)
        torch.manual_seed(seed)
        net(torch.rand(2, 3, 16, 16)).sum().backward()
        used = {
            (b, j)
            for b, block in enumerate(net.blocks)
            for j, column in enumerate(block.columns)
            if any(p.grad is not None for p in column.parameters())
        }
        columns = {j for _, j in used}
        assert len(columns) == 1 and len(used) == len(net.blocks)


def expected_parameters(columns: int, channels: tuple[int, ...], in_channels: int = 3) -> int:
    """Convs (3x3, no bias) + BatchNorm (2 per channel); column j of a block holds 2**j convs."""
    total = 0
    for c_in, c_out in zip((in_channels,) + channels, channels):
        for j in range(columns):
            total += 9 * c_in * c_out + 2 * c_out  # the column's first conv changes the width
            total += (2**j - 1) * (9 * c_out * c_out + 2 * c_out)
    return total


@pytest.mark.parametrize("columns, channels", [(1, (8, 16)), (2, (8, 16)), (3, (8, 16)), (3, (8, 16, 32)), (4, (8,))])
def test_parameter_count_follows_columns_and_blocks(columns, channels):
    net = FractalNet(columns=columns, blocks=len(channels), channels=channels)
    assert sum(p.numel() for p in net.parameters()) == expected_parameters(columns, channels)
    assert net.num_features == channels[-1]
    assert net(torch.rand(2, 3, 16, 16)).shape == (2, channels[-1])


def test_default_fractalnet_matches_the_papers_layout():
    net = FractalNet()
    assert len(net.blocks) == 5 and net.num_columns == 3
    expected = expected_parameters(3, (64, 128, 256, 512, 512))
    assert sum(p.numel() for p in net.parameters()) == expected
    with pytest.raises(ValueError, match="one width per block"):
        FractalNet(blocks=4, channels=(64, 128))
