"""Faults and misuse, part two (issue 20): each case driven through the command line a user types."""

import errno
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import chexpert_rows, write_chexpert
from PIL import Image
from test_import_checkpoint import xrv_reference, xrv_state
from test_train import tiny_config

from chexutils.cli import import_checkpoint as import_cli
from chexutils.cli import phantom as phantom_cli
from chexutils.cli import power as power_cli
from chexutils.cli import predict as predict_cli
from chexutils.cli import train as train_cli
from chexutils.cli import workbook as workbook_cli
from chexutils.core import locks, paths
from chexutils.core.errors import DataError
from chexutils.core.io import Terminated, atomic_path, terminate_cleanly
from chexutils.core.labels import COMPETITION_TASKS
from chexutils.core.rundir import RunDir
from chexutils.data.chexpert import read_chexpert
from chexutils.models.checkpoint import load_checkpoint
from chexutils.training import losses as losses_module
from chexutils.training import train as train_module
from chexutils.training.config import make_config
from chexutils.training.import_checkpoint import import_checkpoint
from chexutils.workbook import runner as workbook

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread per module


def _error_lines(err: str) -> list[str]:
    assert "Traceback" not in err, err
    return [line for line in err.splitlines() if line.startswith("error:")]


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- 1. import_checkpoint into a folder that holds a run ---------------------------------------------


def test_import_into_an_existing_run_is_refused_unless_forced_then_replaces_it_whole(tmp_path, capsys):
    first, second = tmp_path / "a.pt", tmp_path / "b.pt"
    torch.save(xrv_state(xrv_reference(seed=1)), first)
    torch.save(xrv_state(xrv_reference(seed=2)), second)
    run = RunDir(tmp_path / "run")
    assert import_cli.main(["torchxrayvision", str(first), str(run.path), "--image-size", "32"]) == 0
    stale = [run.checkpoint, run.history, run.predictions("select"), run.metrics("official_valid"), run.figure("roc")]
    for path in stale:  # as if the old run had been trained and evaluated
        path.write_text("old")
    old_best = _digest(run.best)
    capsys.readouterr()

    assert import_cli.main(["torchxrayvision", str(second), str(run.path), "--image-size", "32"]) == 2
    errors = _error_lines(capsys.readouterr().err)
    assert len(errors) == 1 and "already holds a run" in errors[0] and "--force" in errors[0]
    assert _digest(run.best) == old_best and all(p.read_text() == "old" for p in stale)

    with locks.exclusive(run.lock, "a training"):  # a training writing the folder: even --force waits its turn
        assert import_cli.main(["torchxrayvision", str(second), str(run.path), "--force"]) == 2
    errors = _error_lines(capsys.readouterr().err)
    assert len(errors) == 1 and "is being written by" in errors[0]
    assert _digest(run.best) == old_best

    assert import_cli.main(["torchxrayvision", str(second), str(run.path), "--image-size", "32", "--force"]) == 0
    assert _digest(run.best) != old_best and run.is_finished()
    assert run.config()["imported"]["sha256"] == _digest(second)
    assert not any(p.exists() for p in stale), [p.name for p in stale if p.exists()]


# --- 2. predict --out -------------------------------------------------------------------------------


@pytest.fixture
def run_and_images(tmp_path):
    """An imported run (32 px) and a folder of two PNG images."""
    source = tmp_path / "xrv.pt"
    torch.save(xrv_state(xrv_reference()), source)
    run = import_checkpoint("torchxrayvision", source, tmp_path / "run", image_size=32)
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        Image.fromarray(rng.integers(0, 255, (40, 48), dtype=np.uint8), mode="L").save(images / name)
    return run, images


def _predict(argv, capsys) -> tuple[int, list[str], str]:
    code = predict_cli.main(argv)
    captured = capsys.readouterr()
    return code, _error_lines(captured.err), captured.out


def test_predict_out_that_is_an_input_image_or_a_folder_is_refused(run_and_images, tmp_path, capsys):
    run, images = run_and_images
    image = images / "a.png"
    before = image.read_bytes()
    for out, why in ((image, "is one of the input images"), (images, "is a folder"), (tmp_path, "is a folder")):
        code, errors, printed = _predict([str(run), str(images), "--out", str(out), "--device", "cpu"], capsys)
        assert code == 2 and len(errors) == 1 and why in errors[0] and str(out) in errors[0], errors
        assert "predicted" not in printed
    assert image.read_bytes() == before  # the image a CSV would have replaced
    code, errors, printed = _predict([str(run), str(image), "--out", str(tmp_path / "new" / "p.csv")], capsys)
    assert code == 0 and not errors and (tmp_path / "new" / "p.csv").is_file()


def test_predict_out_that_cannot_be_written_is_refused_before_predicting(run_and_images, tmp_path, capsys, monkeypatch):
    run, images = run_and_images
    called = []
    monkeypatch.setattr(predict_cli, "predict_images", lambda *a, **k: called.append(a) or pytest.fail("predicted"))
    read_only = tmp_path / "read-only.csv"
    read_only.write_text("keep me")
    read_only.chmod(0o444)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    a_file = tmp_path / "plain"
    a_file.write_text("x")
    try:
        for out, why in (
            (read_only, "read-only"),
            (locked / "p.csv", "cannot write into the folder"),
            (locked / "sub" / "p.csv", "cannot write into the folder"),
            (a_file / "p.csv", "is a file, not a folder"),
        ):
            code, errors, _ = _predict([str(run), str(images), "--out", str(out)], capsys)
            assert code == 2 and len(errors) == 1 and why in errors[0], (out, errors)
    finally:
        locked.chmod(0o755)
        read_only.chmod(0o644)
    assert called == [] and read_only.read_text() == "keep me"


# --- 3. divergence ----------------------------------------------------------------------------------


def _config_file(cfg, path):
    path.write_text(yaml.safe_dump({k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(cfg).items()}))
    return path


def test_lr_1e6_stops_in_epoch_one_with_one_error_line_and_no_best_checkpoint(tiny_phantom, tmp_path):
    cfg = tiny_config(tiny_phantom, tmp_path / "run", lr=1e6, epochs=2)
    done = subprocess.run(
        [sys.executable, "-m", "chexutils", "train", "--config", str(_config_file(cfg, tmp_path / "t.yaml"))],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    errors = _error_lines(done.stderr)
    assert done.returncode == 2 and len(errors) == 1, done.stderr[-2000:]
    assert re.search(r"loss (became nan|became inf|exploded to .*) at epoch 1", errors[0]), errors
    assert "nothing saved" in errors[0]
    run = RunDir(tmp_path / "run")
    assert not run.best.exists() and not run.checkpoint.exists() and not run.history.exists()


@pytest.mark.parametrize("fault", ["selection loss nan", "selection loss exploded", "training loss exploded"])
def test_divergence_in_epoch_two_keeps_epoch_one_and_best_never_holds_it(
    tiny_phantom, tmp_path, monkeypatch, capsys, fault
):
    real_score, real_loss = train_module.score_selection, losses_module.masked_loss  # what loss: bce calls
    epochs = []

    def score(model, head, split, device, cfg):
        scores, probs = real_score(model, head, split, device, cfg)
        epochs.append(1)
        if len(epochs) == 2 and fault.startswith("selection"):  # epoch 2's selection pass
            scores["valid_loss"] = float("nan") if fault.endswith("nan") else 1e4
        return scores, probs

    def loss(logits, values, mask, head):
        value = real_loss(logits, values, mask, head)
        return value * 1e5 if len(epochs) == 1 and fault.startswith("training") and torch.is_grad_enabled() else value

    monkeypatch.setattr(train_module, "score_selection", score)
    monkeypatch.setattr(losses_module, "masked_loss", loss)
    cfg = tiny_config(tiny_phantom, tmp_path / "run", epochs=3, select_metric="valid_loss")
    assert train_cli.main(["--config", str(_config_file(cfg, tmp_path / "t.yaml"))]) == 2
    errors = _error_lines(capsys.readouterr().err)
    assert len(errors) == 1 and "at epoch 2" in errors[0] and fault.rpartition(" ")[0] in errors[0], errors
    assert "last good checkpoint.pt (epoch 1) and best.pt are kept" in errors[0]
    run = RunDir(tmp_path / "run")
    assert load_checkpoint(run.checkpoint)["epoch"] == 0 and load_checkpoint(run.best)["epoch"] == 0
    assert len(pd.read_csv(run.history)) == 1


# --- 4. runner config: step run names, duplicate grid points ------------------------------------------


def _sweep(tmp_path, **extra) -> Path:
    """A sweep config; its data_dir in tmp_path, so a config wrongly accepted writes nothing in the project."""
    config = tmp_path / "sweep.yaml"
    sweep = {"name": "x", "parameters": {"data_dir": str(tmp_path / "data")}, "steps": [{"notebook": "00_data.ipynb"}]}
    config.write_text(yaml.safe_dump({**sweep, **extra}, sort_keys=False))
    return config


def _workbook_run(config, tmp_path, capsys) -> tuple[int, list[str]]:
    code = workbook_cli.main(["run", str(config), "--output-root", str(tmp_path / "out")])
    return code, _error_lines(capsys.readouterr().err)


@pytest.mark.parametrize("name", ["..", ".", "a/b", "../elsewhere", "/tmp/x", ".hidden", ""])
def test_step_run_names_are_checked_like_grid_names(tmp_path, capsys, name):
    step = {"notebook": "01_explore.ipynb", "runs": [{"name": "fine"}, {"name": name}]}
    config = _sweep(tmp_path, steps=[{"notebook": "00_data.ipynb"}, step])
    code, errors = _workbook_run(config, tmp_path, capsys)
    assert code == 2 and len(errors) == 1, errors
    assert str(config) in errors[0] and "steps[1].runs[1]" in errors[0], errors
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "grid, pattern",
    [
        ({"seed": [0, 0]}, r"grid key 'seed' lists 0 twice"),
        ({"data_dir": ["a", "b", "a"], "seed": [0, 1]}, r"grid key 'data_dir' lists 'a' twice"),
        ({"seed": [1, "seed1"]}, r"share the run folder name\(s\) seed1"),
    ],
)
def test_duplicate_grid_points_are_refused_at_load_time(tmp_path, capsys, grid, pattern):
    config = _sweep(tmp_path, steps=[{"notebook": "01_explore.ipynb", "per_run": True}], grid=grid)
    code, errors = _workbook_run(config, tmp_path, capsys)
    assert code == 2 and len(errors) == 1 and str(config) in errors[0] and re.search(pattern, errors[0]), errors
    assert not (tmp_path / "out").exists()


# --- 5. power: SDs and counts ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["--noise-sd", "0"],
        ["--noise-sd", "-0.3"],
        ["--noise-sd", "nan"],
        ["--seed-sd", "-0.01"],
        ["--seeds", "0"],
        ["--seeds", "-2"],
        ["--realised", "0"],
        ["--correlation", "1"],
    ],
)
def test_power_refuses_zero_or_negative_sds_and_counts_with_one_error_line(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:  # argparse's refusal; anything else fails the test
        power_cli.main(argv)
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if "error:" in line]
    assert exit_info.value.code == 2 and len(errors) == 1 and f"argument {argv[0]}: {argv[1]}" in errors[0], captured
    assert captured.out == ""


# --- 6. SIGTERM removes temp files -----------------------------------------------------------------

SLOW_SAVE = """
import pathlib, sys, time
import torch
real_save = torch.save
def slow_save(obj, f, *args, **kwargs):  # the first checkpoint write: its temp file exists, then a pause
    real_save(obj, f, *args, **kwargs)
    pathlib.Path(sys.argv[1]).write_text(str(getattr(f, "name", f)))  # a path or an open file
    time.sleep(120)
torch.save = slow_save
from chexutils.__main__ import main
sys.exit(main(sys.argv[2:]))
"""


def test_sigterm_during_a_checkpoint_write_removes_the_temp_file_and_the_lock(tiny_phantom, tmp_path):
    cfg = tiny_config(tiny_phantom, tmp_path / "run", epochs=2)
    script, marker = tmp_path / "slow_save.py", tmp_path / "writing"
    script.write_text(SLOW_SAVE)
    process = subprocess.Popen(
        [sys.executable, str(script), str(marker), "train", "--config", str(_config_file(cfg, tmp_path / "t.yaml"))],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])},
    )
    try:
        deadline = time.monotonic() + 300
        while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert marker.exists(), process.communicate()[1][-2000:]
        temp = Path(marker.read_text())
        assert temp.name.endswith(f".{process.pid}.tmp") and temp.exists()
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    errors = _error_lines(err)
    assert process.returncode == 128 + signal.SIGTERM and len(errors) == 1 and "SIGTERM" in errors[0], err[-2000:]
    assert not list((tmp_path / "run").glob("*.tmp")) and not locks.is_locked(RunDir(tmp_path / "run").lock)


# --- 7. one error line, never a traceback ----------------------------------------------------------


def _train(argv, capsys) -> tuple[int, list[str]]:
    code = train_cli.main(argv)
    return code, _error_lines(capsys.readouterr().err)


def test_yaml_1e_minus_3_is_the_number_it_means(tiny_phantom, tmp_path, capsys):
    cfg = tiny_config(tiny_phantom, tmp_path / "run", epochs=1, max_steps_per_epoch=1)
    plain = {
        k: (list(v) if isinstance(v, tuple) else v)
        for k, v in vars(cfg).items()
        if k not in ("lr", "betas", "weight_decay")
    }
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump({"train": plain}) + "  lr: 1e-3\n  betas: [9e-1, 0.999]\n  weight_decay: 1E-5\n")
    assert yaml.safe_load(path.read_text())["train"]["lr"] == "1e-3"  # what YAML 1.1 makes of it
    code, errors = _train(["--config", str(path), "--set", "lr_gamma=5e-1"], capsys)
    assert code == 0 and errors == [], errors
    config = RunDir(tmp_path / "run").config()
    assert (config["lr"], config["betas"], config["weight_decay"], config["lr_gamma"]) == (
        1e-3,
        [0.9, 0.999],
        1e-5,
        0.5,
    )
    sweep = _sweep(
        tmp_path,
        steps=[{"notebook": "03_train.ipynb", "per_run": True, "parameters": {"train": {"lr": "1e-3"}}}],
    )
    workbook.load_config(sweep, tmp_path / "out")  # the runner's pre-flight accepts it too


@pytest.mark.parametrize(
    "text, line",
    [
        ("train:\n  lr: 0.1\n  epochs: 2\n  lr: 0.2\n  run_dir: {run}\n  data_dir: {data}\n", 4),
        ("train: {{lr: 0.1, lr: 0.2, run_dir: {run}, data_dir: {data}}}\n", 1),
        ("epochs: 1\nepochs: 2\nrun_dir: {run}\ndata_dir: {data}\n", 2),
    ],
)
def test_duplicate_yaml_keys_are_refused_in_training_configs(tmp_path, capsys, text, line):
    run, data = tmp_path / "run", tmp_path / "data"  # where a wrongly accepted config would go
    path = tmp_path / "t.yaml"
    path.write_text(text.format(run=run, data=data))
    code, errors = _train(["--config", str(path)], capsys)
    assert code == 2 and len(errors) == 1, errors
    assert f"{path} line {line}: key" in errors[0] and "appears twice" in errors[0], errors
    code, errors = _train(["--set", "lr=0.1", "--set", "lr=0.2", f"run_dir={run}", f"data_dir={data}"], capsys)
    assert code == 2 and len(errors) == 1 and "lr is set twice" in errors[0], errors
    assert not run.exists()


def test_duplicate_yaml_keys_are_refused_in_runner_configs(tmp_path, capsys):
    config = _sweep(tmp_path)
    config.write_text(config.read_text() + "name: y\n")
    code, errors = _workbook_run(config, tmp_path, capsys)
    assert code == 2 and len(errors) == 1 and re.search(rf"{config} line \d+: key 'name' appears twice", errors[0])
    assert not (tmp_path / "out").exists()


def test_duplicate_csv_column_is_refused_naming_file_and_column(tiny_phantom, tmp_path, capsys):
    frame = pd.read_csv(tiny_phantom / "train.csv", dtype=str, keep_default_na=False)
    doubled = tiny_phantom / "train_doubled_edema.csv"  # beside train.csv: its Paths resolve the same way
    text = frame.assign(Edema2=frame["Edema"].replace({"1.0": "0.0"})).to_csv(index=False)
    doubled.write_text(text.replace(",Edema2", ",Edema", 1))
    try:
        cfg = tiny_config(tiny_phantom, tmp_path / "run", epochs=1, max_steps_per_epoch=1, train_csv=str(doubled))
        code, errors = _train(["--config", str(_config_file(cfg, tmp_path / "t.yaml"))], capsys)
    finally:
        doubled.unlink()
    assert code == 2 and len(errors) == 1, errors
    assert f"{doubled} line 1: column 'Edema' appears 2 times" in errors[0], errors
    assert not RunDir(tmp_path / "run").best.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_train_and_predict_refuse_a_missing_gpu_and_negative_sizes_with_one_line(run_and_images, tmp_path, capsys):
    run, images = run_and_images
    for argv, message in (
        (["--set", "device=cuda", f"run_dir={tmp_path / 'cuda'}"], "device 'cuda' asked for, but this machine has no"),
        (["--set", "batch_size=-1", f"run_dir={tmp_path / 'neg'}"], "batch_size is -1"),
    ):
        code, errors = _train(argv, capsys)
        assert code == 2 and len(errors) == 1 and message in errors[0], errors
    out = str(tmp_path / "p.csv")
    code, errors, _ = _predict([str(run), str(images), "--out", out, "--device", "cuda"], capsys)
    assert code == 2 and len(errors) == 1 and "device 'cuda' asked for" in errors[0], errors
    for option in ("--batch-size", "--workers"):
        with pytest.raises(SystemExit) as exit_info:
            predict_cli.main([str(run), str(images), "--out", out, option, "-1"])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and "Traceback" not in err
        assert [line for line in err.splitlines() if "error:" in line] == [
            f"python -m chexutils predict: error: argument {option}: -1 is out of range; expected a whole number >= 0"
        ]


# --- 8. no hidden dependence on the demo's folders ---------------------------------------------------


@pytest.mark.parametrize("path", sorted(paths.NOTEBOOK_DIR.glob("*.ipynb")), ids=lambda p: p.name)
def test_notebook_inputs_default_to_their_own_sweep(path):
    """As papermill runs a step whose config leaves the inputs out: the parameters cell, the runner's
    output_dir (and run_name), then the cell that fills the defaults' placeholders. Every file or folder
    a default names must then lie in this sweep's folder; none may name another sweep (output/demo/...)."""
    book = nbformat.read(path, as_version=4)
    code = [c for c in book.cells if c.cell_type == "code"]
    params = next(i for i, c in enumerate(code) if "parameters" in c.metadata.get("tags", []))
    namespace: dict = {}
    exec(code[params].source, namespace)
    declared = {k for k in namespace if not k.startswith("__")}
    sweep = "output/elsewhere-sweep"
    injected = {"output_dir": sweep, **({"run_name": "run-a"} if "run_name" in declared else {})}
    namespace.update(injected)
    fill = [c for c in code if "sweep-defaults" in c.metadata.get("tags", [])]
    for cell in fill:
        exec(cell.source, namespace)
    for name in sorted(declared - set(injected)):
        value = namespace[name]
        if isinstance(value, str) and value:
            assert not value.startswith("output/") or value.startswith(sweep + "/"), (name, value)
            assert "{" not in value, (name, value)  # every placeholder filled
    if "run_dir" in declared:
        assert namespace["run_dir"] == f"{sweep}/run-a"


def test_terminate_cleanly_turns_sigterm_into_an_exception_that_removes_temp_files(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    target = tmp_path / "table.csv"
    with pytest.raises(Terminated) as stop, terminate_cleanly():
        with atomic_path(target) as temp:
            temp.write_text("half")
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises before this ends
    assert stop.value.name == "SIGTERM" and not temp.exists() and not target.exists()
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is put back


@pytest.mark.parametrize("cli", ["predict", "import_checkpoint"])
def test_other_writing_clis_stop_cleanly_on_sigterm(cli, tmp_path, monkeypatch, capsys):
    def killed(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)

    if cli == "predict":
        monkeypatch.setattr(predict_cli, "predict_images", killed)
        code = predict_cli.main([str(tmp_path), str(tmp_path), "--out", str(tmp_path / "p.csv")])
    else:
        monkeypatch.setattr(import_cli, "import_checkpoint", killed)
        code = import_cli.main(["chexnet", str(tmp_path / "x.pt"), str(tmp_path / "run")])
    errors = _error_lines(capsys.readouterr().err)
    assert code == 128 + signal.SIGTERM and len(errors) == 1 and "stopped by SIGTERM" in errors[0], errors


# --- 8. a full disk, a read-only folder, unscoreable selection data, phantom misuse (issue 20) ---------


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_full_disk_under_the_image_cache_is_one_error_naming_the_folder(tiny_phantom, tmp_path, monkeypatch, capsys):
    cfg = tiny_config(tiny_phantom, tmp_path / "run", epochs=1, max_steps_per_epoch=1)
    monkeypatch.setattr(os, "posix_fallocate", _no_space)  # reserving images.npy's blocks meets a full disk
    code, errors = _train(["--config", str(_config_file(cfg, tmp_path / "t.yaml"))], capsys)
    cache_root = tmp_path / "cache"
    assert code == 2 and len(errors) == 1, errors
    assert str(cache_root) in errors[0] and "no space left" in errors[0] and "MiB" in errors[0], errors
    assert not list(cache_root.rglob("images.npy")) and not list(cache_root.rglob("meta.json"))
    assert not RunDir(tmp_path / "run").checkpoint.exists()


def test_full_disk_under_a_run_folder_is_one_error_and_leaves_no_temp_file(tiny_phantom, tmp_path, monkeypatch, capsys):
    cfg = tiny_config(tiny_phantom, tmp_path / "run", epochs=1, max_steps_per_epoch=1)
    real_save = torch.save

    def half_then_full(obj, f, *args, **kwargs):
        real_save({"part": torch.zeros(4)}, f)  # some bytes reach the temp file, then the disk is full
        _no_space()

    monkeypatch.setattr(torch, "save", half_then_full)
    code, errors = _train(["--config", str(_config_file(cfg, tmp_path / "t.yaml"))], capsys)
    run = RunDir(tmp_path / "run")
    assert code == 2 and len(errors) == 1, errors
    assert errors[0].startswith(f"error: {run.path}: no space left"), errors
    assert not list(run.path.glob("*.tmp")) and not run.best.exists() and not run.checkpoint.exists()
    assert not locks.is_locked(run.lock)


def _read_only(folder: Path, monkeypatch) -> None:
    """``folder`` read-only; as root (who may write anyway) creating or writing a file in it is refused by
    patching os.open and open, as the kernel would refuse it to any other user."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o555)
    if os.geteuid() != 0:
        return
    real_os_open, real_open = os.open, open

    def inside(path) -> bool:
        return isinstance(path, (str, Path)) and Path(path).absolute().is_relative_to(folder)

    def os_open(path, flags, *args, **kwargs):
        if inside(path) and flags & os.O_CREAT and not os.path.exists(path):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_os_open(path, flags, *args, **kwargs)

    def py_open(file, mode="r", *args, **kwargs):
        if inside(file) and any(c in mode for c in "wax+"):
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(os, "open", os_open)
    monkeypatch.setattr("builtins.open", py_open)
    monkeypatch.setattr("io.open", py_open)


@pytest.mark.parametrize("lock", ["no lock file yet", "an earlier run's lock file"])
def test_read_only_run_folder_is_one_error_line(tiny_phantom, tmp_path, monkeypatch, capsys, lock):
    run = tmp_path / "run"
    cfg = tiny_config(tiny_phantom, run, epochs=1, max_steps_per_epoch=1)
    config = _config_file(cfg, tmp_path / "t.yaml")
    if lock != "no lock file yet":
        run.mkdir()
        (run / ".lock").write_text("")
    _read_only(run, monkeypatch)
    try:
        code, errors = _train(["--config", str(config)], capsys)
    finally:
        run.chmod(0o755)
    assert code == 2 and len(errors) == 1, errors
    assert errors[0].startswith(f"error: {run}: cannot ") and "Permission denied" in errors[0], errors
    assert not list(run.glob("*.tmp"))


def test_lr_1e20_in_a_training_config_is_one_error_line(tiny_phantom, tmp_path, capsys):
    cfg = tiny_config(tiny_phantom, tmp_path / "run", epochs=1, max_steps_per_epoch=2)
    path = _config_file(cfg, tmp_path / "t.yaml")
    path.write_text(re.sub(r"(?m)^lr: .*$", "lr: 1e20", path.read_text()))  # YAML reads 1e20 as text
    code, errors = _train(["--config", str(path)], capsys)
    assert code == 2 and len(errors) == 1 and "epoch 1" in errors[0] and "lower lr" in errors[0], errors


def test_selection_csv_without_positives_is_refused_before_training(tiny_phantom, tmp_path, capsys):
    frame = pd.read_csv(tiny_phantom / "valid.csv")
    frame[list(COMPETITION_TASKS)] = 0.0
    valid = tmp_path / "no_positives.csv"
    frame.to_csv(valid, index=False)
    cfg = tiny_config(tiny_phantom, tmp_path / "run", epochs=1, max_steps_per_epoch=1, valid_csv=str(valid))
    code, errors = _train(["--config", str(_config_file(cfg, tmp_path / "t.yaml"))], capsys)
    assert code == 2 and len(errors) == 1, errors
    assert str(valid) in errors[0] and "select_metric: valid_loss" in errors[0], errors
    assert not (tmp_path / "cache").exists()  # refused before any cache was built
    code, errors = _train(["--config", str(tmp_path / "t.yaml"), "--set", "select_metric=valid_loss"], capsys)
    assert code == 0 and errors == []


PHANTOM_ARGS = ["--patients", "2", "--valid-patients", "1", "--test-patients", "0", "--size", "32", "32"]


def test_phantom_out_onto_real_data_or_a_file_is_refused_with_one_line(tmp_path, capsys):
    real = write_chexpert(tmp_path / "real", chexpert_rows())  # a train.csv the phantom did not write
    before = _digest(real)
    assert phantom_cli.main(["--out", str(tmp_path / "real"), *PHANTOM_ARGS, "--workers", "1"]) == 2
    errors = _error_lines(capsys.readouterr().err)
    assert len(errors) == 1 and "not a phantom" in errors[0] and str(real) in errors[0], errors
    assert _digest(real) == before and not (real.parent / "phantom_truth.json").exists()
    afile = tmp_path / "afile"
    afile.write_text("mine")
    assert phantom_cli.main(["--out", str(afile), *PHANTOM_ARGS]) == 2
    errors = _error_lines(capsys.readouterr().err)
    assert len(errors) == 1 and "existing file" in errors[0] and afile.read_text() == "mine", errors


def test_threads_is_recorded_and_used_however_the_process_was_started(tiny_phantom, tmp_path, monkeypatch):
    seen = []
    real_epoch = train_module.train_one_epoch

    def counting(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(train_module, "train_one_epoch", counting)
    outside = torch.get_num_threads()
    run = train_module.fit(tiny_config(tiny_phantom, tmp_path / "run", epochs=1, max_steps_per_epoch=1, threads=2))
    assert seen == [2] and torch.get_num_threads() == outside
    assert json.loads((run / "config.json").read_text())["threads"] == 2
    assert make_config().threads == 1  # the default: one thread per run, serial or --jobs alike


def test_a_trailing_comma_on_every_data_row_is_one_error_naming_the_lines(tmp_path):
    """Issue 20: a trailing comma shifted every column ("Path 'Female' does not match ..."); now the cause."""
    csv_path = write_chexpert(tmp_path, chexpert_rows())
    lines = csv_path.read_text().splitlines()
    csv_path.write_text("\n".join([lines[0], *(line + "," for line in lines[1:])]) + "\n")
    with pytest.raises(
        DataError,
        match=r"train.csv lines 2, 3, 4, 5: 20 field\(s\), expected 19 as in the header \(a trailing comma\?\)",
    ):
        read_chexpert(csv_path)
