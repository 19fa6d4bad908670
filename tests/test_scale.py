"""Scale-out: the sync-free training step, drop_last, lr rules, the device cache, launch under torchrun."""

import json
import threading

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from test_train import tiny_config

from chexutils.core.errors import DataError
from chexutils.data import cache as cache_module
from chexutils.data.cache import ImageCache
from chexutils.data.chexpert import read_chexpert
from chexutils.data.device_cache import DeviceImages, maybe_on_device
from chexutils.data.loader import BatchLoader, image_source
from chexutils.models.checkpoint import load_checkpoint
from chexutils.training import launch
from chexutils.training.config import effective_lr, make_config
from chexutils.training.policies import ORIGINAL_MIXED_MAPPING
from chexutils.training.train import TrainingDiverged, _check_loss, fit


def _history(run):
    return pd.read_csv(run / "history.csv").drop(columns=["seconds", "images_per_s"])


def _weights_equal(a, b) -> bool:
    wa, wb = load_checkpoint(a / "checkpoint.pt")["model"], load_checkpoint(b / "checkpoint.pt")["model"]
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_loss_summed_on_the_device_equals_per_step_reads(tiny_phantom, tmp_path):
    """Reading the loss every step, every 2 steps or once per epoch (the default) trains the same model;
    so does the whole cache held in (CPU) device memory."""
    per_step = fit(tiny_config(tiny_phantom, tmp_path / "per-step", epochs=1, loss_sync_every=1))
    every_two = fit(tiny_config(tiny_phantom, tmp_path / "every-two", epochs=1, loss_sync_every=2))
    default = fit(tiny_config(tiny_phantom, tmp_path / "default", epochs=1, cache_on_device=True))
    assert make_config().loss_sync_every > 1
    for other in (every_two, default):
        np.testing.assert_allclose(_history(per_step).to_numpy(), _history(other).to_numpy(), rtol=1e-9)
        assert _weights_equal(per_step, other)


def test_nan_is_caught_at_the_next_sync_point():
    total = torch.tensor(3.0, dtype=torch.float64)
    assert _check_loss(total, 10, "binary", epoch=0, checked=0, step=4) == 5
    with pytest.raises(TrainingDiverged, match="loss became nan at epoch 2, between steps 6 and 9"):
        _check_loss(total + float("nan"), 10, "binary", epoch=1, checked=5, step=8)
    with pytest.raises(TrainingDiverged, match="loss exploded to 1000 at epoch 1, between steps 1 and 5"):
        _check_loss(total * 1000 / 3, 1, "binary", epoch=0, checked=0, step=4)  # above 1000 x ln 2


def test_compile_is_off_by_default_and_lr_scales_by_the_stated_rule():
    cfg = make_config()
    assert cfg.compile is False and cfg.drop_last is False and cfg.lr_scale_rule == "none" and cfg.nproc_per_node == 1
    assert effective_lr(make_config(batch_size=128, lr=1e-4)) == pytest.approx(1e-4)
    assert effective_lr(make_config(batch_size=128, lr=1e-4, lr_scale_rule="linear")) == pytest.approx(4e-4)
    assert effective_lr(make_config(batch_size=128, lr=1e-4, lr_scale_rule="sqrt")) == pytest.approx(2e-4)
    assert effective_lr(
        make_config(image_size=320, batch_size=64, lr_scale_rule="linear", base_batch_size=32, lr=1e-4)
    ) == pytest.approx(2e-4)
    with pytest.raises(DataError, match="lr_scale_rule is 'cubic'; known: none, linear, sqrt"):
        make_config(lr_scale_rule="cubic")


def test_linear_rule_reaches_the_optimiser_and_config_json(tiny_phantom, tmp_path):
    run = fit(
        tiny_config(
            tiny_phantom,
            tmp_path / "run",
            epochs=1,
            batch_size=32,
            base_batch_size=16,
            lr=1e-3,
            lr_scale_rule="linear",
            max_steps_per_epoch=1,
        )
    )
    assert json.loads((run / "config.json").read_text())["lr_effective"] == pytest.approx(2e-3)
    assert pd.read_csv(run / "history.csv")["lr"].tolist() == pytest.approx([2e-3])


def _memory_cache(n: int = 10, size: int = 4) -> ImageCache:
    images = np.arange(n * size * size, dtype=np.int64).reshape(n, size, size).astype(np.uint8)
    return ImageCache(folder=None, images=images, size=size, method="bilinear")


def test_drop_last_drops_the_ragged_batch():
    cache = _memory_cache(10)
    sizes = lambda **kw: [len(rows) for _, rows in BatchLoader(cache, 4, shuffle=True, **kw)]
    assert sizes() == [4, 4, 2] and sizes(drop_last=True) == [4, 4]
    assert sizes(drop_last=True, rank=1, world=2) == [4]  # 5 rows per rank, one full batch
    seen = np.concatenate([rows.numpy() for _, rows in BatchLoader(cache, 4, shuffle=True, drop_last=True)])
    assert len(set(seen)) == 8


def test_no_full_batch_is_a_data_error_naming_the_csv(tiny_phantom, tmp_path):
    with pytest.raises(DataError, match=r"train\.csv: \d+ images give no full batch of 100000"):
        fit(tiny_config(tiny_phantom, tmp_path / "run", epochs=1, batch_size=100_000, drop_last=True))


def test_device_images_give_the_same_batches_as_the_host_cache():
    cache = _memory_cache(10)
    on_device = DeviceImages(cache, "cpu", chunk=3)
    assert len(on_device) == 10
    host = list(BatchLoader(cache, 4, shuffle=True, seed=5))
    device = list(BatchLoader(on_device, 4, shuffle=True, seed=5))
    for (a, rows_a), (b, rows_b) in zip(host, device, strict=True):
        assert torch.equal(rows_a, rows_b) and torch.equal(a, b)
    assert maybe_on_device(cache, "cpu", None) is cache  # auto: only on CUDA
    assert maybe_on_device(cache, "cpu", False) is cache


def test_launch_writes_a_config_torchrun_reads_back(tmp_path):
    mapping = {**ORIGINAL_MIXED_MAPPING, "Edema": "U-Zeros"}
    cfg = make_config(nproc_per_node=2, policy="mixed", policy_options={"mapping": mapping}, betas=(0.8, 0.9))
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(launch.config_as_yaml(cfg)))
    assert make_config(path) == cfg
    command = launch.torchrun_command(path, 2)
    assert command[1:] == [
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "chexutils",
        "train",
        "--config",
        str(path),
    ]
    with pytest.raises(DataError, match="nproc_per_node is 0; expected a number >= 1"):
        make_config(nproc_per_node=0)


def test_runs_opening_one_cache_at_once_build_it_once(tiny_phantom, tmp_path, monkeypatch):
    frame = read_chexpert(tiny_phantom / "valid.csv")
    builds, real_build = [], cache_module._build
    monkeypatch.setattr(cache_module, "_build", lambda *a, **kw: builds.append(a[0]) or real_build(*a, **kw))
    opened = []
    threads = [
        threading.Thread(target=lambda: opened.append(image_source(frame, 24, "bilinear", True, tmp_path)))
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(builds) == 1 and len(opened) == 3
    assert all(np.array_equal(o.images, opened[0].images) for o in opened)


def test_bench_settings_table_projects_epoch_minutes_from_img_s():
    from benchmarks.gpu_step import CHEXPERT_SMALL_TRAIN_IMAGES, Setting, gpu_settings_table

    settings = (Setting("per-step sync", 4, amp=False, fast=False), Setting("fast loop", 4, amp=False, fast=True))
    rows = gpu_settings_table(sizes=(32,), warm_steps=1, timed_steps=2, device="cpu", settings=settings)
    assert [r["setting"] for r in rows] == ["per-step sync", "fast loop"]
    for row in rows:
        assert row["img_s"] > 0 and row["first_epoch_min"] >= row["epoch_min"]
        assert row["epoch_min"] == pytest.approx(CHEXPERT_SMALL_TRAIN_IMAGES / row["img_s"] / 60)
