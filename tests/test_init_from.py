"""init_from: a run started from an imported torchxrayvision-layout checkpoint reproduces it, then trains
with its trunk frozen for freeze_trunk_epochs; a checkpoint that does not fit is refused; each loss trains."""

import hashlib
import json

import pandas as pd
import pytest
import torch
import torchvision
from torch import nn

from chexutils.core.errors import DataError
from chexutils.core.labels import OBSERVATIONS
from chexutils.models.backbones import build_model
from chexutils.models.checkpoint import load_checkpoint
from chexutils.scoring.predict import load_run_model
from chexutils.training.config import make_config
from chexutils.training.import_checkpoint import XRV_CHEX_LABELS, import_checkpoint
from chexutils.training.init_from import initialise
from chexutils.training.train import fit

pytestmark = pytest.mark.usefixtures("one_thread")
NOT_PREDICTED = ["No Finding", "Pleural Other", "Support Devices"]  # by torchxrayvision's CheXpert model


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """A torchxrayvision-layout state dict (1-channel DenseNet121, 18 outputs) imported as a run at 32 px."""
    folder = tmp_path_factory.mktemp("xrv")
    torch.manual_seed(5)
    net = torchvision.models.densenet121(num_classes=len(XRV_CHEX_LABELS))
    net.features.conv0 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    state = net.state_dict()
    state["op_threshs"] = torch.tensor([0.5 if name else float("nan") for name in XRV_CHEX_LABELS])
    torch.save(state, folder / "xrv-chex.pt")
    return import_checkpoint("torchxrayvision", folder / "xrv-chex.pt", folder / "run", image_size=32)


def tiny_config(tiny_phantom, run_dir, **overrides):
    base = dict(
        data_dir=str(tiny_phantom.parent),
        backbone="densenet121",
        image_size=32,
        epochs=1,
        batch_size=16,
        lr=1e-3,
        max_steps_per_epoch=2,
        run_dir=str(run_dir),
        cache_dir=str(run_dir.parent / "cache"),
        policy="U-Ones",
    )
    return make_config(**{**base, **overrides})


def trunk(state: dict) -> dict:
    return {k: v for k, v in state.items() if k.startswith("features.")}


def test_a_run_started_from_an_imported_checkpoint_reproduces_it_before_training(imported, tmp_path):
    cfg = make_config(backbone="xrv-densenet121", image_size=32, init_from=str(imported), run_dir=str(tmp_path))
    torch.manual_seed(0)
    model = build_model("xrv-densenet121", "binary")
    fresh_head = model.classifier.weight.detach().clone()
    record = initialise(cfg, model)
    source, _ = load_run_model(imported, "cpu")
    images = torch.randint(0, 256, (3, 1, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, theirs = model.eval()(images), source(images)
    predicted = [OBSERVATIONS.index(o) for o in OBSERVATIONS if o not in NOT_PREDICTED]
    # the same weights on the same input: equal to float32 round-off (tolerance 1e-6)
    torch.testing.assert_close(ours[:, predicted], theirs[:, predicted], rtol=1e-6, atol=1e-6)
    assert torch.isfinite(ours).all() and torch.isnan(theirs[:, OBSERVATIONS.index("No Finding")]).all()
    assert record["head"] == "kept" and record["head_rows_reinitialised"] == NOT_PREDICTED
    assert record["sha256"] == hashlib.sha256((imported / "best.pt").read_bytes()).hexdigest()
    assert record["source_backbone"] == "xrv-densenet121" and record["source_policy"] == "imported:torchxrayvision"
    row = OBSERVATIONS.index("Support Devices")
    torch.testing.assert_close(model.classifier.weight[row], fresh_head[row])  # the new run's own init
    again = build_model("xrv-densenet121", "binary")
    record = initialise(make_config(**{**vars(cfg), "reinit_head": True}), again)
    assert record["head"] == "reinitialised" and record["head_reason"] == "reinit_head: true"
    three_class = build_model("xrv-densenet121", "multiclass")  # 14 x 3 outputs: the source's 14 do not fit
    record = initialise(make_config(**{**vars(cfg), "policy": "U-MultiClass"}), three_class)
    assert record["head"] == "reinitialised" and "does not match" in record["head_reason"]


def test_fine_tuning_freezes_the_trunk_for_the_frozen_epochs_then_trains_it(imported, tiny_phantom, tmp_path):
    run = tmp_path / "fine"
    options = dict(backbone="xrv-densenet121", init_from=str(imported), freeze_trunk_epochs=1, head_lr=1e-2)
    fit(tiny_config(tiny_phantom, run, **options))  # epoch 1 of 2, then the run is resumed
    source = trunk(load_checkpoint(imported / "best.pt")["model"])
    after_one = load_checkpoint(run / "checkpoint.pt")
    assert all(torch.equal(source[k], v) for k, v in trunk(after_one["model"]).items())  # BatchNorm stats too
    assert [g["lr"] for g in after_one["optimizer"]["param_groups"]] == [1e-3, 1e-2]
    fit(tiny_config(tiny_phantom, run, epochs=2, **options))  # resumed: no second init
    after_two = trunk(load_checkpoint(run / "checkpoint.pt")["model"])
    assert not torch.equal(after_two["features.trunk.conv0.weight"], source["features.trunk.conv0.weight"])
    history = pd.read_csv(run / "history.csv")
    assert list(history["epoch"]) == [1, 2] and history["train_loss"].nunique() == 2
    config = json.loads((run / "config.json").read_text())
    assert config["init"]["head"] == "kept" and config["init"]["source"] == str(imported / "best.pt")


def test_a_checkpoint_that_does_not_fit_is_refused(imported, tmp_path):
    cfg = make_config(backbone="densenet121", image_size=32, init_from=str(imported))
    with pytest.raises(
        DataError,
        match=r"best.pt: init_from refused: trained with backbone xrv-densenet121; "
        r"expected a densenet121 trunk with 3 input channel\(s\)",
    ):
        initialise(cfg, build_model("densenet121", "binary"))
    bare = tmp_path / "bare"  # no config in the file: the input layer itself tells
    bare.mkdir()
    torch.save({"model": load_checkpoint(imported / "best.pt")["model"]}, bare / "best.pt")
    with pytest.raises(DataError, match=r"features.trunk.conv0.weight takes 1 channel\(s\); expected a densenet121"):
        initialise(make_config(init_from=str(bare)), build_model("densenet121", "binary"))
    with pytest.raises(DataError, match="best.pt: file does not exist; init_from expects a finished"):
        initialise(make_config(init_from=str(tmp_path / "nothing")), build_model("densenet121", "binary"))


@pytest.mark.parametrize("loss", ["bce", "weighted-bce", "auc-margin"])
def test_a_tiny_run_with_each_loss_finishes_and_writes_history(loss, tiny_phantom, tmp_path):
    extra = {"epochs": 2, "lr_step_epochs": 1, "lr": 0.1} if loss == "auc-margin" else {}
    run = fit(tiny_config(tiny_phantom, tmp_path / loss, loss=loss, **extra))
    history = pd.read_csv(run / "history.csv")
    assert len(history) == extra.get("epochs", 1) and history["train_loss"].notna().all()
    config = json.loads((run / "config.json").read_text())
    assert config["loss"] == loss and config["loss_resolved"]["name"] == loss
    if loss == "auc-margin":
        assert history["lr"].tolist() == [0.1, pytest.approx(0.01)]  # PESG's stage: lr x lr_gamma
        assert set(config["loss_resolved"]["imbalance_ratio"]) == set(OBSERVATIONS)
        variables = load_checkpoint(run / "checkpoint.pt")["optimizer"]["auc_variables"]
        assert (variables[2] >= 0).all() and variables[2].sum() > 0  # alpha: ascended, never negative
