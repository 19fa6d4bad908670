"""Training runs on a tiny phantom: run directory, resume == uninterrupted, safety, DDP on CPU."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from chexutils.core.errors import DataError
from chexutils.models.checkpoint import CheckpointError, load_checkpoint
from chexutils.training import train as train_module
from chexutils.training.config import make_config
from chexutils.training.train import HISTORY_COLUMNS, TrainingDiverged, fit


def tiny_config(tiny_phantom, run_dir, **overrides):
    base = dict(
        data_dir=str(tiny_phantom.parent),
        backbone="densenet121",
        image_size=32,
        epochs=2,
        batch_size=16,
        lr=1e-3,
        run_dir=str(run_dir),
        cache_dir=str(run_dir.parent / "cache"),
        policy="U-Ones",
    )
    return make_config(**{**base, **overrides})


def test_run_directory_is_complete(tiny_phantom, tmp_path):
    run = fit(tiny_config(tiny_phantom, tmp_path / "run"))
    config = json.loads((run / "config.json").read_text())
    assert config["policy"] == "U-Ones" and config["head"] == "binary" and config["batch_size"] == 16
    assert config["versions"]["torch"] == torch.__version__
    history = pd.read_csv(run / "history.csv")
    assert list(history.columns) == HISTORY_COLUMNS and list(history["epoch"]) == [1, 2]
    assert np.isfinite(history[["train_loss", "valid_loss", "images_per_s"]].to_numpy()).all()
    assert history["lr"].tolist() == [1e-3, 1e-3]
    state = load_checkpoint(run / "checkpoint.pt")
    assert state["epoch"] == 1 and state["config"]["seed"] == 0 and len(state["history"]) == 2
    best = load_checkpoint(run / "best.pt")
    assert set(best) == {"model", "epoch", "metric", "config"}
    predictions = pd.read_csv(run / "predictions_select.csv")
    assert len(predictions) == config["valid_images"]
    assert predictions["Edema"].between(0, 1).all()


def test_resumed_run_ends_like_an_uninterrupted_one(tiny_phantom, tmp_path, monkeypatch):
    whole = fit(tiny_config(tiny_phantom, tmp_path / "whole", epochs=3, lr_step_epochs=1, lr_gamma=0.5))
    real_epoch = train_module.train_one_epoch

    def killed_in_epoch_two(model, head, optimizer, loader, split, device, cfg, epoch, show):
        if epoch == 1:
            for step, _ in enumerate(loader):  # part of an epoch, then the machine dies
                optimizer.step()
                if step == 2:
                    raise KeyboardInterrupt
        return real_epoch(model, head, optimizer, loader, split, device, cfg, epoch, show)

    monkeypatch.setattr(train_module, "train_one_epoch", killed_in_epoch_two)
    cfg = tiny_config(tiny_phantom, tmp_path / "resumed", epochs=3, lr_step_epochs=1, lr_gamma=0.5)
    with pytest.raises(KeyboardInterrupt):
        fit(cfg)
    assert load_checkpoint(tmp_path / "resumed" / "checkpoint.pt")["epoch"] == 0
    monkeypatch.setattr(train_module, "train_one_epoch", real_epoch)
    resumed = fit(cfg)
    a, b = pd.read_csv(whole / "history.csv"), pd.read_csv(resumed / "history.csv")
    cols = ["train_loss", "valid_loss", "valid_auroc_tasks", "lr"]
    np.testing.assert_allclose(a[cols].to_numpy(), b[cols].to_numpy(), rtol=1e-6)
    wa, wb = load_checkpoint(whole / "checkpoint.pt")["model"], load_checkpoint(resumed / "checkpoint.pt")["model"]
    assert all(torch.allclose(wa[k].float(), wb[k].float(), atol=1e-6) for k in wa)


def test_same_seed_same_run_and_caller_rng_untouched(tiny_phantom, tmp_path):
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = fit(tiny_config(tiny_phantom, tmp_path / "a", epochs=1))
    assert torch.equal(torch.get_rng_state(), before)
    b = fit(tiny_config(tiny_phantom, tmp_path / "b", epochs=1))
    pd.testing.assert_frame_equal(
        pd.read_csv(a / "history.csv").drop(columns=["seconds", "images_per_s"]),
        pd.read_csv(b / "history.csv").drop(columns=["seconds", "images_per_s"]),
    )


def test_pickled_checkpoint_is_refused(tiny_phantom, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"model": {}, "config": make_config()}, run / "checkpoint.pt")  # a dataclass: needs pickle
    with pytest.raises(CheckpointError, match="refused .*weights_only"):
        load_checkpoint(run / "checkpoint.pt")
    with pytest.raises(CheckpointError, match="checkpoint.pt: refused"):
        fit(tiny_config(tiny_phantom, run))


def test_resume_with_other_settings_is_refused(tiny_phantom, tmp_path):
    fit(tiny_config(tiny_phantom, tmp_path / "run", epochs=1))
    with pytest.raises(CheckpointError, match="other settings \\(lr\\)"):
        fit(tiny_config(tiny_phantom, tmp_path / "run", epochs=2, lr=0.5))


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tiny_phantom, tmp_path, monkeypatch):
    real_loss = train_module.masked_loss
    calls = {"n": 0}

    def loss_nan_in_epoch_two(logits, values, mask, head):
        loss = real_loss(logits, values, mask, head)
        calls["n"] += 1
        return loss * float("nan") if calls["n"] > 12 and torch.is_grad_enabled() else loss

    monkeypatch.setattr(train_module, "masked_loss", loss_nan_in_epoch_two)
    cfg = tiny_config(tiny_phantom, tmp_path / "run", epochs=3)
    with pytest.raises(TrainingDiverged, match="loss became nan at epoch 2"):
        fit(cfg)
    state = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert state["epoch"] == 0 and all(
        torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point()
    )


def test_unknown_config_key_fails_loudly(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("train:\n  polcy: U-Ones\n")
    with pytest.raises(DataError, match="unknown key\\(s\\) polcy"):
        make_config(path)
    assert make_config(image_size=320).batch_size == 16 and make_config(image_size=224).batch_size == 32


def test_two_process_ddp_on_cpu(tiny_phantom, tmp_path):
    cfg = tiny_config(tiny_phantom, tmp_path / "ddp", epochs=1, policy="U-MultiClass")
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump({k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(cfg).items()}))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517"]
    done = subprocess.run(
        torchrun + ["-m", "chexutils", "train", "--config", str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    config = json.loads((tmp_path / "ddp" / "config.json").read_text())
    assert config["world_size"] == 2 and config["head"] == "multiclass"
    assert len(pd.read_csv(tmp_path / "ddp" / "history.csv")) == 1
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == [  # .lock: rank 0's run-folder lock
        ".lock",
        "best.pt",
        "checkpoint.pt",
        "config.json",
        "history.csv",
        "predictions_select.csv",
    ]


def test_self_trained_student_learns_from_a_u_ignore_teacher(tiny_phantom, tmp_path):
    teacher = fit(tiny_config(tiny_phantom, tmp_path / "teacher", epochs=1, policy="U-Ignore", predict_train=True))
    predictions = pd.read_csv(teacher / "predictions_train.csv")
    assert len(predictions) == json.loads((teacher / "config.json").read_text())["train_images"]
    student = fit(
        tiny_config(
            tiny_phantom,
            tmp_path / "student",
            epochs=1,
            policy="U-SelfTrained",
            policy_options={"teacher": str(teacher)},
        )
    )
    resolved = json.loads((student / "config.json").read_text())["policy_resolved"]
    assert resolved["name"] == "U-SelfTrained" and str(teacher) in json.dumps(resolved)


def test_training_with_and_without_the_cache_agrees(tiny_phantom, tmp_path):
    cached = fit(tiny_config(tiny_phantom, tmp_path / "cached", epochs=1))
    jpeg = fit(tiny_config(tiny_phantom, tmp_path / "jpeg", epochs=1, use_cache=False, workers=2))
    cols = ["train_loss", "valid_loss", "valid_auroc_tasks"]
    np.testing.assert_allclose(
        pd.read_csv(cached / "history.csv")[cols].to_numpy(),
        pd.read_csv(jpeg / "history.csv")[cols].to_numpy(),
        rtol=1e-5,
    )


def test_resume_trains_only_the_missing_epochs_and_keeps_earlier_history(tiny_phantom, tmp_path, monkeypatch):
    cfg = tiny_config(tiny_phantom, tmp_path / "run", epochs=1)
    fit(cfg)
    first = pd.read_csv(tmp_path / "run" / "history.csv")
    trained = []
    real_epoch = train_module.train_one_epoch

    def recording(model, head, optimizer, loader, split, device, cfg, epoch, show):
        trained.append(epoch)
        return real_epoch(model, head, optimizer, loader, split, device, cfg, epoch, show)

    monkeypatch.setattr(train_module, "train_one_epoch", recording)
    fit(tiny_config(tiny_phantom, tmp_path / "run", epochs=3))
    assert trained == [1, 2]  # epochs are 0-based: only the two missing ones
    again = pd.read_csv(tmp_path / "run" / "history.csv")
    assert list(again["epoch"]) == [1, 2, 3]
    pd.testing.assert_frame_equal(again.iloc[:1], first)  # 'seconds' too: the row is carried, not recomputed


def test_resume_restores_the_rng_a_backbone_uses_while_training(tiny_phantom, tmp_path):
    """FractalNet's drop-path draws from torch's RNG, so a resume that reseeds instead of restoring differs."""
    options = dict(backbone="fractalnet", batch_size=8, max_steps_per_epoch=3)
    whole = fit(tiny_config(tiny_phantom, tmp_path / "whole", epochs=2, **options))
    fit(tiny_config(tiny_phantom, tmp_path / "resumed", epochs=1, **options))
    resumed = fit(tiny_config(tiny_phantom, tmp_path / "resumed", epochs=2, **options))
    wa, wb = load_checkpoint(whole / "checkpoint.pt")["model"], load_checkpoint(resumed / "checkpoint.pt")["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_jpeg_path_never_touches_the_cache(tiny_phantom, tmp_path):
    cache = tmp_path / "never"
    fit(tiny_config(tiny_phantom, tmp_path / "jpeg", epochs=1, use_cache=False, cache_dir=str(cache)))
    assert not cache.exists()
    fit(tiny_config(tiny_phantom, tmp_path / "cached", epochs=1, cache_dir=str(cache)))
    assert any(cache.rglob("*.npy"))  # the same call with the cache on does build one


def test_selection_auroc_is_the_study_max_of_the_written_predictions(tiny_phantom, tmp_path):
    from chexutils.core.labels import COMPETITION_TASKS, OBSERVATIONS
    from chexutils.data.chexpert import read_chexpert
    from chexutils.scoring.aggregate import aggregate_studies
    from chexutils.scoring.metrics import per_observation

    run = fit(tiny_config(tiny_phantom, tmp_path / "run", epochs=1))
    frame = read_chexpert(tiny_phantom / "valid.csv", root=tiny_phantom.parent).set_index("Path")
    predictions = pd.read_csv(run / "predictions_select.csv")
    rows = frame.loc[predictions["Path"]].reset_index()
    labels, scores = aggregate_studies(rows, predictions[list(OBSERVATIONS)].to_numpy(), how="max")
    expected = per_observation(labels, scores).loc[list(COMPETITION_TASKS), "auroc"].astype(float).mean()
    assert rows.groupby("study").size().max() > 1  # studies with several views, so max != mean matters
    history = pd.read_csv(run / "history.csv")
    assert history["valid_auroc_tasks"].iloc[-1] == pytest.approx(expected, abs=1e-9)


DDP_PROBE = """
import sys, numpy as np, torch
from torch.nn.parallel import DistributedDataParallel
from chexutils.cli import train as train_cli
from chexutils.training import train
real = train.train_one_epoch
def probe(model, head, optimizer, loader, split, device, cfg, epoch, show):
    rank = torch.distributed.get_rank()
    loader.set_epoch(epoch)
    np.save(f"{OUT}/rows{rank}.npy", np.concatenate(loader.batches()))
    out = real(model, head, optimizer, loader, split, device, cfg, epoch, show)
    torch.save({"wrapped": isinstance(model, DistributedDataParallel),
                "weights": {k: v.detach().clone() for k, v in model.named_parameters()}}, f"{OUT}/state{rank}.pt")
    return out
train.train_one_epoch = probe
sys.exit(train_cli.main(sys.argv[1:]))
"""


def test_ddp_ranks_train_disjoint_shards_into_identical_weights(tiny_phantom, tmp_path):
    """Parameters, not BatchNorm statistics: DDP syncs gradients; running stats follow each rank's last batch."""
    cfg = tiny_config(tiny_phantom, tmp_path / "ddp", epochs=1)
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump({k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(cfg).items()}))
    script = tmp_path / "probe.py"
    script.write_text(f"OUT = {str(tmp_path)!r}\n" + DDP_PROBE)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29519"]
    done = subprocess.run(
        torchrun + [str(script), "--config", str(path)], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [set(np.load(tmp_path / f"rows{r}.npy").tolist()) for r in (0, 1)]
    n_train = json.loads((tmp_path / "ddp" / "config.json").read_text())["train_images"]
    # DistributedSampler pads an odd count with one repeated row; otherwise the shards are disjoint
    assert len(rows[0] & rows[1]) <= n_train % 2 and rows[0] | rows[1] == set(range(n_train))
    states = [torch.load(tmp_path / f"state{r}.pt", weights_only=True) for r in (0, 1)]
    assert states[0]["wrapped"] and states[1]["wrapped"]
    assert all(torch.equal(states[0]["weights"][k], states[1]["weights"][k]) for k in states[0]["weights"])
