"""Faults and misuse: concurrent writers, moved runs, damaged files, bad configs (issue 10)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from chexutils.checkpoint import load_checkpoint
from chexutils.locks import is_locked
from chexutils.rundir import RunDir
from chexutils.train import fit
from chexutils.train_config import make_config


def tiny_config(tiny_phantom, run_dir, **overrides):
    base = dict(data_dir=str(tiny_phantom.parent), backbone="densenet121", image_size=32, epochs=1, batch_size=16,
                lr=1e-3, run_dir=str(run_dir), cache_dir=str(run_dir.parent / "cache"), policy="U-Ones")
    return make_config(**{**base, **overrides})


def _train_cli(config_path, **popen):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "chexutils.train", "--config", str(config_path)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def test_second_training_into_one_folder_stops_naming_the_holder(tiny_phantom, tmp_path):
    run = tmp_path / "run"
    cfg = tiny_config(tiny_phantom, run, epochs=500, max_steps_per_epoch=1)
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump({k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(cfg).items()}))
    first = _train_cli(path)
    try:
        deadline = time.time() + 180
        while not is_locked(RunDir(run).lock):
            assert first.poll() is None and time.time() < deadline, first.communicate()[1][-2000:]
            time.sleep(0.2)
        second = _train_cli(path)
        _, err = second.communicate(timeout=180)
        assert second.returncode == 2
        assert f"run folder {run} is being written by pid {first.pid} on host" in err
        assert first.poll() is None  # the first one goes on undisturbed
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert not is_locked(RunDir(run).lock)  # the kernel dropped the dead holder's lock
    state = load_checkpoint(run / "checkpoint.pt")
    saved = json.loads((run / "config.json").read_text())
    assert saved["run_dir"] == str(run) and state["config"]["epochs"] == 500
    resumed = fit(tiny_config(tiny_phantom, run, epochs=state["epoch"] + 2, max_steps_per_epoch=1))
    assert len(load_checkpoint(resumed / "checkpoint.pt")["history"]) == state["epoch"] + 2
