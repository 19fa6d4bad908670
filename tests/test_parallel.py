"""Sweeps in parallel (--jobs, submitit's local executor) and multi-process runs launched by the runner.

Each sweep trains the tiny phantom for 1 epoch at 32 px through notebook 03. Run folders are
compared file by file; only the timing columns (seconds, images_per_s) and the executed notebook
(timestamps) may differ from the serial sweep's, though the serial sweep's kernels start with
other thread settings (a run trains with its config's ``threads``).
"""

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time

import pandas as pd
import psutil
import pytest
import torch

from chexutils.core import locks
from chexutils.core.errors import DataError
from chexutils.models.checkpoint import load_checkpoint
from chexutils.training import launch
from chexutils.training.config import FIELDS
from chexutils.workbook import parallel
from chexutils.workbook import runner as workbook
from chexutils.workbook.runner import load_config

pytestmark = pytest.mark.notebooks  # executes notebooks: make test-fast leaves these out


SWEEP = """
name: {name}
parameters: {{data_dir: {data}}}
steps:
  - notebook: 03_train.ipynb
    per_run: true
    parameters: {{train_csv: "", select_csv: "", train: {{image_size: 32, batch_size: 16, lr: 0.001{extra}}}}}
grid: {grid}
{slurm}
"""


def _config(root, name="sweep", grid="{policy: [U-Zeros, U-Ones], train.epochs: [1]}", extra="", slurm=""):
    path = root / f"{name}.yaml"
    path.write_text(SWEEP.format(name=name, data=root / "data", grid=grid, extra=extra, slurm=slurm))
    return path


@pytest.fixture(scope="module")
def data_root(tmp_path_factory, tiny_phantom):
    """A folder whose data/ holds the session's tiny phantom (link), so caches land in data/cache."""
    root = tmp_path_factory.mktemp("parallel")
    (root / "data").mkdir()
    (root / "data" / tiny_phantom.name).symlink_to(tiny_phantom)
    return root


def _same_run(a, b) -> None:
    """Everything a run folder records, except wall-clock timings, is equal."""
    assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir())
    for name in ("config.json", "predictions_select.csv"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    timing = ["seconds", "images_per_s"]
    pd.testing.assert_frame_equal(
        pd.read_csv(a / "history.csv").drop(columns=timing), pd.read_csv(b / "history.csv").drop(columns=timing)
    )
    for name in ("checkpoint.pt", "best.pt"):
        wa, wb = load_checkpoint(a / name)["model"], load_checkpoint(b / name)["model"]
        assert all(torch.equal(wa[k], wb[k]) for k in wa), name


@pytest.fixture(scope="module")
def sweeps(data_root):
    """The same 2-point sweep run serially, with --jobs 2 and through submitit's local executor.

    The serial sweep's kernels are started with other thread settings than a parallel job's (two
    threads, as a serial sweep on 2 cores gets): the run's own ``threads`` (1) decides, so the
    numbers agree however the sweep was launched."""
    serial_env = {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
    saved = {k: os.environ.get(k) for k in serial_env}
    os.environ.update(serial_env)
    out = data_root / "out"  # each sweep writes here (so paths in config.json agree), then moves aside
    try:
        serial = workbook.execute(load_config(_config(data_root), out), log=print)
    finally:
        for key, value in saved.items():
            os.environ.pop(key) if value is None else os.environ.update({key: value})
    out.rename(data_root / "serial")
    cache_entries = sorted(p for p in (data_root / "data" / "cache").iterdir() if p.is_dir())
    jobs = parallel.execute_parallel(load_config(_config(data_root), out), jobs=2)
    out.rename(data_root / "jobs")
    slurm = "slurm: {cluster: local, cpus_per_task: 1, timeout_min: 20}"
    submitted = parallel.execute_parallel(load_config(_config(data_root, slurm=slurm), out), slurm=True)
    out.rename(data_root / "submitit")
    return {"serial": serial, "jobs": jobs, "submitit": submitted, "cache_entries": cache_entries}


def test_parallel_sweeps_equal_the_serial_sweep(sweeps, data_root):
    for kind in ("serial", "jobs", "submitit"):
        assert [(o.step, o.run, o.status) for o in sweeps[kind]] == [
            ("03_train.ipynb", "U-Zeros_epochs1", "ok"),
            ("03_train.ipynb", "U-Ones_epochs1", "ok"),
        ], kind
    for run in ("U-Zeros_epochs1", "U-Ones_epochs1"):
        for kind in ("jobs", "submitit"):
            _same_run(data_root / "serial" / "sweep" / run, data_root / kind / "sweep" / run)
        config = json.loads((data_root / "serial" / "sweep" / run / "config.json").read_text())
        assert config["threads"] == 1  # recorded: the count it trained with, whatever the launch


def test_sweeps_on_one_data_set_share_one_cache(sweeps, data_root):
    """Three sweeps, one cache per CSV (train and valid) at 32 px, built once by the first."""
    assert len(sweeps["cache_entries"]) == 2
    assert sorted(p for p in (data_root / "data" / "cache").iterdir() if p.is_dir()) == sweeps["cache_entries"]
    config = json.loads((data_root / "jobs" / "sweep" / "U-Ones_epochs1" / "config.json").read_text())
    assert config["cache_dir"] == str(data_root / "data" / "cache")
    assert config["run_dir"] == str(data_root / "out" / "sweep" / "U-Ones_epochs1")  # where it ran, before the move


def test_killed_parallel_sweep_resumes_only_unfinished_runs(data_root):
    path = _config(data_root, name="killed", grid="{policy: [U-Ones], train.epochs: [1, 4]}")
    command = [
        sys.executable,
        "-m",
        "chexutils",
        "workbook",
        "run",
        str(path),
        "--jobs",
        "2",
        "--output-root",
        str(data_root / "killed"),
    ]
    sweep = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    short_done = data_root / "killed" / "killed" / ".done" / "03_train__U-Ones_epochs1.json"
    long_history = data_root / "killed" / "killed" / "U-Ones_epochs4" / "history.csv"
    deadline = time.monotonic() + 900
    while not (short_done.is_file() and long_history.is_file()) and sweep.poll() is None:
        assert time.monotonic() < deadline, "the sweep did not get going"
        time.sleep(0.2)
    os.killpg(sweep.pid, signal.SIGKILL)  # the runner and its workers; their kernels exit when they see it
    sweep.wait()
    time.sleep(3)
    assert len(pd.read_csv(long_history)) < 4, "the long run finished before the kill"
    lines = []
    outcomes = parallel.execute_parallel(load_config(path, data_root / "killed"), jobs=2, log=lines.append)
    assert [(o.run, o.status) for o in outcomes] == [("U-Ones_epochs1", "skipped"), ("U-Ones_epochs4", "ok")]
    assert any(line.startswith("start  [U-Ones_epochs4]") for line in lines)
    assert len(pd.read_csv(long_history)) == 4


@pytest.mark.parametrize(("jobs", "signum"), [(2, signal.SIGTERM), (1, signal.SIGTERM), (2, signal.SIGINT)])
def test_sigterm_to_the_runner_ends_its_workers_and_kernels_and_a_rerun_resumes_only_unfinished_runs(
    data_root, tmp_path, jobs, signum
):
    """`make demo`'s command stopped by SIGTERM (or Ctrl-C's SIGINT) sent to the runner alone (not its
    process group)."""
    name = f"stopped{jobs}{signum.name}"
    path = _config(data_root, name=name, grid="{policy: [U-Ones], train.epochs: [1, 4]}")
    root = data_root / name
    command = [sys.executable, "-m", "chexutils", "workbook", "run", str(path), "--jobs", str(jobs)]
    command += ["--output-root", str(root)]
    sweep_dir = root / name
    short_done = sweep_dir / ".done" / "03_train__U-Ones_epochs1.json"
    long_history = sweep_dir / "U-Ones_epochs4" / "history.csv"
    with open(tmp_path / "out.txt", "w") as out, open(tmp_path / "err.txt", "w") as err:
        sweep = subprocess.Popen(command, start_new_session=True, stdout=out, stderr=err)
    tree = []
    try:
        deadline = time.monotonic() + 900
        while not (short_done.is_file() and long_history.is_file()) and sweep.poll() is None:
            assert time.monotonic() < deadline, "the sweep did not get going"
            time.sleep(0.2)
        tree = psutil.Process(sweep.pid).children(recursive=True)  # workers, kernels (own session), ...
        kernels = [p for p in tree if "ipykernel" in " ".join(p.cmdline())]
        assert kernels, [p.cmdline() for p in tree]
        assert len(pd.read_csv(long_history)) < 4, "the long run finished before the signal"
        sweep.send_signal(signum)  # the runner only; its group and the kernels' sessions get nothing
        code = sweep.wait(timeout=60)
        _, alive = psutil.wait_procs(tree, timeout=30)
        assert not alive, [p.cmdline() for p in alive]
    finally:
        for process in [psutil.Process(sweep.pid)] if sweep.poll() is None else []:
            process.kill()
        for process in tree:
            with contextlib.suppress(psutil.Error):
                process.kill()
    err = (tmp_path / "err.txt").read_text()
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert "Traceback" not in err and len(errors) == 1 and f"stopped by {signum.name}" in errors[0], err[-3000:]
    assert code == 128 + signum
    assert not locks.is_locked(sweep_dir / ".lock") and not locks.is_locked(sweep_dir / "U-Ones_epochs4" / ".lock")
    assert len(pd.read_csv(long_history)) < 4, "a kernel went on training after the runner stopped"
    assert not (sweep_dir / ".done" / "03_train__U-Ones_epochs4.json").exists()
    assert not list(sweep_dir.rglob("*.tmp"))  # no half-written file outlives its killed writer
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert re.search(r"skip +03_train\.ipynb \[U-Ones_epochs1\]", rerun.stdout), rerun.stdout
    assert re.search(r"run +03_train\.ipynb \[U-Ones_epochs4\]", rerun.stdout), rerun.stdout
    assert len(pd.read_csv(long_history)) == 4


def test_two_processes_from_the_runner_match_the_torchrun_command_line(data_root, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    path = _config(
        data_root, name="ddp", grid="{policy: [U-MultiClass], train.epochs: [1]}", extra=", nproc_per_node: 2"
    )
    outcomes = workbook.execute(load_config(path, data_root / "runner"), log=print)
    assert [o.status for o in outcomes] == ["ok"]
    run = data_root / "runner" / "ddp" / "U-MultiClass_epochs1"
    config = json.loads((run / "config.json").read_text())
    assert config["world_size"] == 2 and config["nproc_per_node"] == 2
    assert "run finished" in (run / "03_train.ipynb").read_text()  # torchrun's output, streamed into the notebook
    yaml_path = data_root / "ddp-cli.yaml"  # the same resolved config, another run folder
    cli_cfg = {k: v for k, v in config.items() if k in FIELDS}
    cli_cfg["run_dir"] = str(data_root / "cli" / "U-MultiClass_epochs1")
    yaml_path.write_text(json.dumps(cli_cfg))
    done = subprocess.run(
        launch.torchrun_command(yaml_path, 2), env=launch.child_env(2), capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr[-3000:]
    cli = data_root / "cli" / "U-MultiClass_epochs1"
    assert (run / "predictions_select.csv").read_bytes() == (cli / "predictions_select.csv").read_bytes()
    timing = ["seconds", "images_per_s"]
    pd.testing.assert_frame_equal(
        pd.read_csv(run / "history.csv").drop(columns=timing), pd.read_csv(cli / "history.csv").drop(columns=timing)
    )


def test_blocks_slots_and_slurm_section(tmp_path):
    steps = [
        workbook.Step("00_data.ipynb"),
        workbook.Step("03_train.ipynb", per_run=True),
        workbook.Step("04_evaluate.ipynb", per_run=True),
        workbook.Step("05_compare.ipynb"),
    ]
    assert parallel.blocks(steps) == [(False, [0]), (True, [1, 2]), (False, [3])]
    assert parallel.slot_environments(2, gpus=4) == [{"CUDA_VISIBLE_DEVICES": "0,1"}, {"CUDA_VISIBLE_DEVICES": "2,3"}]
    assert parallel.slot_environments(3, gpus=0, cpus=8)[2] == {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
    with pytest.raises(DataError, match="slurm has unknown key\\(s\\) partiton"):
        load_config(_config(tmp_path, slurm="slurm: {partiton: gpu}"))
