"""Recipes that train, on the tiny phantom: one grid point of each shipped recipe config trains; DeepAUC's
second stage starts from a re-initialised classifier with PESG; a hierarchical run resumed across the
stage boundary ends like an uninterrupted one, and its predictions obey the product rule."""

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from chexutils.core import paths
from chexutils.core.labels import OBSERVATIONS, PARENT
from chexutils.evaluation.evaluate import predict_run, read_labels_csv
from chexutils.models.checkpoint import load_checkpoint
from chexutils.training.config import make_config
from chexutils.training.train import fit
from chexutils.workbook.runner import load_config, step_parameters

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = dict(image_size=32, batch_size=16, max_steps_per_epoch=2, pretrained=None, workers=0)


def grid_point_config(tiny_phantom, tmp_path, name: str, run: str | None = None):
    """The TrainConfig notebook 03 would build for one run of ``configs/<name>.yaml``, made tiny."""
    config = load_config(paths.CONFIG_DIR / f"{name}.yaml", tmp_path / "out")
    step = next(s for s in config.steps if s.notebook == "03_train.ipynb")
    runs = step.runs if step.runs is not None else config.runs()
    point = next(r for r in runs if run is None or r[0] == run)
    params = step_parameters(config, step, point)
    train = {**params["train"], **TINY}
    train["epochs"] = train.get("stage1_epochs", 0) + 1 if train.get("recipe", "single") != "single" else 1
    for key in ("policy", "backbone", "seed"):
        if key in params:
            train[key] = params[key]
    return point[0], make_config(
        train,
        data_dir=str(tiny_phantom.parent),
        run_dir=str(tmp_path / point[0]),
        cache_dir=str(tmp_path / "cache"),
    )


def test_a_deepauc_grid_point_pretrains_with_bce_then_trains_auc_m_from_a_new_head(tiny_phantom, tmp_path):
    name, cfg = grid_point_config(tiny_phantom, tmp_path, "deepauc-224")
    assert cfg.recipe == "deepauc" and cfg.loss == "auc-margin" and cfg.auc_lr == 0.1 and cfg.stage1_epochs == 1
    run = fit(cfg)
    record = json.loads((run / "config.json").read_text())
    stages = record["recipe_resolved"]["stages"]
    assert [s["loss"] for s in stages] == ["bce", "auc-margin"] and "re-initialised" in stages[1]["classifier"]
    history = pd.read_csv(run / "history.csv")
    assert history["lr"].tolist() == pytest.approx([1e-4, 0.1])  # Adam at lr, then PESG at auc_lr
    assert load_checkpoint(run / "best.pt")["epoch"] == 1  # best.pt is chosen among the AUC-M epochs
    state = load_checkpoint(run / "checkpoint.pt")
    assert "auc_variables" in state["optimizer"]  # the saved optimiser is stage 2's PESG
    assert np.isfinite(history[["train_loss", "valid_loss"]].to_numpy()).all()


@pytest.mark.parametrize(
    "name, run",
    [("policy-by-loss", "U-Ones_densenet121_auc-margin_seed0"), ("augmentation", "random-crop_seed0")],
)
def test_one_grid_point_of_each_phantom_recipe_config_trains(tiny_phantom, tmp_path, name, run):
    found, cfg = grid_point_config(tiny_phantom, tmp_path, name, run)
    assert found == run
    if name == "augmentation":
        assert cfg.augment_crop == 0.8 and cfg.policy == "U-Ones"
        cfg = dataclasses.replace(cfg, geometry="pad", augment_flip=0.5)  # the other two arms' fields too
    else:
        assert cfg.loss == "auc-margin" and cfg.lr == 0.001 and cfg.auc_lr == 0.1
    out = fit(cfg)
    record = json.loads((out / "config.json").read_text())
    history = pd.read_csv(out / "history.csv")
    assert len(history) == cfg.epochs and np.isfinite(history["train_loss"]).all()
    if name == "augmentation":
        assert record["augment_resolved"] == {"crop": 0.8, "flip": 0.5, "rotate": 0.0, "active": True}
        assert record["geometry"] == "pad"
    else:
        assert history["lr"].tolist() == pytest.approx([0.1])


def test_a_hierarchical_run_resumed_across_the_stage_boundary_ends_like_an_uninterrupted_one(tiny_phantom, tmp_path):
    name, whole_cfg = grid_point_config(
        tiny_phantom, tmp_path, "hierarchical-320", "U-Ones_densenet121_hierarchical_seed0"
    )
    assert whole_cfg.recipe == "hierarchical" and whole_cfg.stage1_epochs == 3
    whole_cfg = dataclasses.replace(whole_cfg, epochs=2, stage1_epochs=1, run_dir=str(tmp_path / "whole"))
    whole = fit(whole_cfg)
    resumed_cfg = dataclasses.replace(whole_cfg, run_dir=str(tmp_path / "resumed"))
    fit(dataclasses.replace(resumed_cfg, epochs=1))  # stopped after stage 1
    resumed = fit(resumed_cfg)  # stage 2 starts on resume
    a = pd.read_csv(whole / "predictions_select.csv")[list(OBSERVATIONS)]
    b = pd.read_csv(resumed / "predictions_select.csv")[list(OBSERVATIONS)]
    np.testing.assert_allclose(a.to_numpy(float), b.to_numpy(float), rtol=1e-4, atol=1e-5)
    record = json.loads((whole / "config.json").read_text())
    stage1, stage2 = record["recipe_resolved"]["stages"]
    assert 0 < stage1["images"] < stage2["images"] == record["train_images"]
    for child, parent in PARENT.items():  # P(child) = P(child | parent) P(parent) <= P(parent)
        assert (a[child] <= a[parent] + 1e-6).all(), child
    frame = read_labels_csv(tiny_phantom / "valid.csv", str(tiny_phantom.parent))
    again = pd.read_csv(predict_run(whole, frame, "official_valid"))[list(OBSERVATIONS)]  # 04's path
    np.testing.assert_allclose(again.to_numpy(float), a.to_numpy(float), rtol=1e-4, atol=1e-5)
