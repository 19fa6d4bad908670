"""Published checkpoints as runs: state dicts built here in the exact published layouts (no
downloads); every tensor mapped, mismatches refused, the original architecture's outputs reproduced."""

import json
from collections import OrderedDict

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision
from torch import nn

from chexutils.cli.import_checkpoint import main
from chexutils.core.errors import DataError
from chexutils.core.labels import OBSERVATIONS
from chexutils.evaluation.evaluate import evaluate_set, read_labels_csv
from chexutils.models.backbones import probabilities
from chexutils.scoring.metrics import NOT_PREDICTED
from chexutils.scoring.predict import load_run_model, predict_images
from chexutils.training.import_checkpoint import CHEXNET_LABELS, XRV_CHEX_LABELS, import_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread per module


def randomise_batchnorm(net: nn.Module, seed: int) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine weights, so a mis-mapped tensor changes the output."""
    generator = torch.Generator().manual_seed(seed)
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(n, generator=generator) * 0.1)
    return net.eval()


def xrv_reference(seed: int = 1) -> nn.Module:
    """torchxrayvision's DenseNet at densenet121 settings: torchvision's module names, a 1-channel conv0,
    an 18-output classifier, forward = features -> relu -> global average pool -> classifier."""
    torch.manual_seed(seed)
    net = torchvision.models.densenet121(num_classes=len(XRV_CHEX_LABELS))
    net.features.conv0 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return randomise_batchnorm(net, seed)


def xrv_state(net: nn.Module) -> OrderedDict:
    """What xrv's model.state_dict() holds: the weights plus the op_threshs buffer (NaN where untrained)."""
    state = net.state_dict()
    thresholds = torch.tensor([0.2 if name else float("nan") for name in XRV_CHEX_LABELS])
    state["op_threshs"] = thresholds
    return state


class CheXNetModel(nn.Module):
    """CheXNet's DenseNet121 wrapper: torchvision densenet121 as ``self.densenet121`` with a
    Sequential(Linear, Sigmoid) classifier over the 14 ChestX-ray14 labels."""

    def __init__(self):
        super().__init__()
        self.densenet121 = torchvision.models.densenet121()
        self.densenet121.classifier = nn.Sequential(nn.Linear(1024, len(CHEXNET_LABELS)), nn.Sigmoid())

    def forward(self, x):
        return self.densenet121(x)


def chexnet_reference(seed: int = 2) -> nn.Module:
    torch.manual_seed(seed)
    model = CheXNetModel()
    randomise_batchnorm(model, seed)
    return model


def chexnet_checkpoint(model: nn.Module) -> dict:
    """model.pth.tar as published: {'state_dict': DataParallel keys with torchvision 0.2 layer names}."""
    state = nn.DataParallel(model).state_dict()
    old = OrderedDict()
    for key, value in state.items():
        for name in ("norm1", "relu1", "conv1", "norm2", "relu2", "conv2"):
            if ".denselayer" in key and f".{name}." in key:
                key = key.replace(f".{name}.", f".{name[:-1]}.{name[-1]}.")
        old[key] = value
    assert any(".norm.1." in k for k in old) and all(k.startswith("module.densenet121.") for k in old)
    return {"epoch": 100, "arch": "densenet121", "state_dict": old}


def grey_batch(size=64, batch=2, seed=0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, 1, size, size), dtype=torch.uint8, generator=generator)


def test_torchxrayvision_import_reproduces_the_original(tmp_path):
    reference = xrv_reference()
    path = tmp_path / "xrv-chex.pt"
    torch.save(xrv_state(reference), path)
    run = import_checkpoint("torchxrayvision", path, tmp_path / "run", image_size=64)
    model, config = load_run_model(run, torch.device("cpu"))
    images = grey_batch()
    with torch.no_grad():
        ours = model(images)
        theirs = reference((2 * (images.float() / 255) - 1) * 1024)  # xrv utils.normalize(img, 255)
    record = config["imported"]
    assert record["tensors_mapped"] == len(reference.state_dict())  # every tensor, op_threshs recorded
    assert len(record["op_threshs"]) == 18 and record["op_threshs"][2] is None
    assert record["mapping"]["Effusion"] == "Pleural Effusion"
    assert record["not_predicted"] == ["No Finding", "Pleural Other", "Support Devices"]
    for i, name in enumerate(XRV_CHEX_LABELS):
        if name:
            column = OBSERVATIONS.index(record["mapping"][name])
            torch.testing.assert_close(ours[:, column], theirs[:, i], rtol=1e-4, atol=1e-4)
    for name in record["not_predicted"]:
        assert torch.isnan(ours[:, OBSERVATIONS.index(name)]).all()


def test_chexnet_import_reproduces_the_original(tmp_path):
    reference = chexnet_reference()
    path = tmp_path / "model.pth.tar"
    torch.save(chexnet_checkpoint(reference), path)
    run = import_checkpoint("chexnet", path, tmp_path / "run", image_size=64)
    model, config = load_run_model(run, torch.device("cpu"))
    images = grey_batch()
    mean, std = (
        torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1),
        torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1),
    )
    with torch.no_grad():
        ours = probabilities(model(images), "binary")
        theirs = reference((images.float().repeat(1, 3, 1, 1) / 255 - mean) / std)  # CheXNet: RGB, ImageNet
    record = config["imported"]
    assert record["tensors_mapped"] == len(reference.state_dict())
    assert set(record["mapping"].values()) == {
        "Atelectasis",
        "Cardiomegaly",
        "Pleural Effusion",
        "Pneumonia",
        "Pneumothorax",
        "Consolidation",
        "Edema",
    }
    assert set(record["left_out_source_outputs"]) == {
        "Infiltration",
        "Mass",
        "Nodule",
        "Emphysema",
        "Fibrosis",
        "Pleural_Thickening",
        "Hernia",
    }
    for i, name in enumerate(CHEXNET_LABELS):
        if name in record["mapping"]:
            column = OBSERVATIONS.index(record["mapping"][name])
            torch.testing.assert_close(ours[:, column], theirs[:, i], rtol=1e-4, atol=1e-5)
    assert torch.isnan(ours[:, OBSERVATIONS.index("Lung Opacity")]).all()


def test_mismatched_files_are_refused(tmp_path, capsys):
    chexnet = tmp_path / "chexnet.pth.tar"
    torch.save(chexnet_checkpoint(chexnet_reference()), chexnet)
    with pytest.raises(
        DataError,
        match=r"chexnet\.pth\.tar: does not match the torchxrayvision.*unexpected key.*"
        r"module\.densenet121\.",
    ):
        import_checkpoint("torchxrayvision", chexnet, tmp_path / "a")
    state = xrv_state(xrv_reference())
    xrv = tmp_path / "xrv.pt"
    torch.save(state, xrv)
    with pytest.raises(
        DataError,
        match=r"does not match the chexnet.*wrong shape.*conv0\.weight \(64, 1, 7, 7\) "
        r"\(expected \(64, 3, 7, 7\)\)",
    ):
        import_checkpoint("chexnet", xrv, tmp_path / "b")
    del state["features.norm5.running_var"]
    state["classifier.weight"] = state["classifier.weight"][:14]
    torch.save(state, tmp_path / "cut.pt")
    with pytest.raises(DataError, match=r"missing key.*features\.trunk\.norm5\.running_var.*classifier \(14, 1024\)"):
        import_checkpoint("torchxrayvision", tmp_path / "cut.pt", tmp_path / "c")
    torch.save(xrv_reference(), tmp_path / "pickled.pt")  # a whole pickled module, as xrv publishes
    assert main(["torchxrayvision", str(tmp_path / "pickled.pt"), str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert "weights_only=True" in err and "state_dict()" in err
    assert not (tmp_path / "d").exists() and not (tmp_path / "a").exists()


def test_imported_run_works_with_evaluate_and_predict(tiny_phantom, tmp_path):
    path = tmp_path / "xrv.pt"
    torch.save(xrv_state(xrv_reference()), path)
    assert main(["torchxrayvision", str(path), str(tmp_path / "run"), "--image-size", "32"]) == 0
    run = tmp_path / "run"
    config = json.loads((run / "config.json").read_text())
    config["cache_dir"] = str(tmp_path / "cache")
    (run / "config.json").write_text(json.dumps(config))
    frame = read_labels_csv(tiny_phantom / "valid.csv", tiny_phantom.parent)
    _, table, summary = evaluate_set(run, frame, "official_valid", n_resamples=20)
    assert table.loc["Support Devices", "note"] == NOT_PREDICTED and np.isnan(table.loc["Support Devices", "auroc"])
    assert table.loc["Edema", "note"] != NOT_PREDICTED
    predictions = pd.read_csv(run / "predictions_official_valid.csv")
    assert predictions["No Finding"].isna().all() and predictions["Edema"].between(0, 1).all()
    new, failures, _ = predict_images(run, [frame["image"].iloc[0]], device="cpu", show=False)
    assert failures == [] and new["Pleural Other"].isna().all()
    # the CSV keeps 6 decimals and float32 convolutions differ in the last bits between a batch and one image
    np.testing.assert_allclose(new["Edema"].to_numpy(), predictions["Edema"].iloc[:1].to_numpy(), atol=1e-5)
