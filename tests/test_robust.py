"""Faults and misuse: concurrent writers, moved runs, damaged files, bad configs (issue 10)."""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import chexpert_rows, free_port, wait_for_jupyter, write_chexpert
from PIL import Image
from test_train import tiny_config as train_tiny_config

from chexutils.cli import cache_admin as cache_admin_cli
from chexutils.cli import workbook as workbook_cli
from chexutils.core import locks, paths
from chexutils.core.errors import DataError
from chexutils.core.locks import is_locked
from chexutils.core.rundir import RunDir
from chexutils.data import cache as cache_module
from chexutils.data.cache import open_cache
from chexutils.data.cache_admin import list_caches
from chexutils.data.chexpert import read_chexpert
from chexutils.data.loader import epoch_batches, image_source
from chexutils.models.checkpoint import CheckpointError, load_checkpoint
from chexutils.training.config import make_config
from chexutils.training.train import fit
from chexutils.workbook import guards as runner_guards
from chexutils.workbook import runner as workbook
from chexutils.workbook.report import write_report


def tiny_config(tiny_phantom, run_dir, **overrides):
    """test_train's tiny DenseNet121 config, one epoch unless told otherwise."""
    return train_tiny_config(tiny_phantom, run_dir, **{"epochs": 1, **overrides})


def _train_cli(config_path, **popen):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "chexutils", "train", "--config", str(config_path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


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


# --- image caches --------------------------------------------------------------------------------


def _copy_tree(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


@pytest.fixture
def small_set(tmp_path):
    """A six-image CheXpert folder of our own (its images get rewritten); returns the train.csv."""
    return write_chexpert(tmp_path / "data", chexpert_rows(6))


def test_changed_image_under_an_existing_cache_gets_a_fresh_cache(small_set, tmp_path):
    frame = read_chexpert(small_set)
    first = image_source(frame, 16, "bilinear", True, tmp_path / "cache")
    changed = frame["image"].iloc[3]
    Image.fromarray(np.full((40, 48), 255, np.uint8), mode="L").save(changed)  # same path, new pixels
    second = image_source(frame, 16, "bilinear", True, tmp_path / "cache")
    assert second.folder != first.folder
    np.testing.assert_array_equal(second.images[3], np.full((16, 16), 255, np.uint8))
    np.testing.assert_array_equal(second.images[0], first.images[0])
    content = image_source(frame, 16, "bilinear", True, tmp_path / "cache", check="content")
    assert content.folder not in (first.folder, second.folder)
    np.testing.assert_array_equal(content.images, second.images)


def test_rebuild_copies_unchanged_rows_from_the_older_cache(small_set, tmp_path, monkeypatch):
    frame = read_chexpert(small_set)
    open_cache(frame, 16, tmp_path / "cache", workers=1)
    Image.fromarray(np.zeros((40, 48), np.uint8), mode="L").save(frame["image"].iloc[2])
    calls = []
    real = cache_module.load_resized
    monkeypatch.setattr(cache_module, "load_resized", lambda *a: calls.append(a[0]) or real(*a))
    fresh = open_cache(frame, 16, tmp_path / "cache", workers=1)
    assert calls == [frame["image"].iloc[2]]
    for row in range(6):
        np.testing.assert_array_equal(fresh.images[row], real(frame["image"].iloc[row], 16))


def test_second_builder_waits_for_the_first_then_reads_its_cache(small_set, tmp_path, capsys):
    frame = read_chexpert(small_set)
    folder = cache_module.cache_folder(
        tmp_path / "cache", frame["image"].tolist(), 16, "bilinear", cache_module.file_stamps(frame["image"].tolist())
    )
    result = {}
    with locks.exclusive(folder / ".lock", "test"):  # another process is building it
        waiter = threading.Thread(
            target=lambda: result.update(cache=open_cache(frame, 16, tmp_path / "cache", workers=1))
        )
        waiter.start()
        deadline = time.time() + 30
        while "waiting for image cache" not in capsys.readouterr().out:
            assert time.time() < deadline
            time.sleep(0.05)
        assert waiter.is_alive() and "cache" not in result
    waiter.join(timeout=60)
    assert result["cache"].folder == folder and (folder / "meta.json").is_file()


def test_partial_caches_are_listed_and_removed_but_complete_ones_kept(small_set, tmp_path, capsys):
    frame = read_chexpert(small_set)
    complete = open_cache(frame, 16, tmp_path / "cache", workers=1).folder
    bad = frame["image"].iloc[1]
    open(bad, "wb").write(b"not a jpeg")
    with pytest.raises(DataError):
        open_cache(frame, 16, tmp_path / "cache", workers=1)
    states = {info.folder: info.state for info in list_caches(tmp_path / "cache")}
    assert states[complete] == "complete" and sorted(states.values()) == ["complete", "partial"]
    assert cache_admin_cli.main(["list", str(tmp_path / "cache")]) == 0
    assert "partial" in capsys.readouterr().out
    assert make_clean_cache(tmp_path / "cache") == 0
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [complete.name]
    assert cache_admin_cli.main(["clean", str(tmp_path / "cache"), "--all"]) == 0
    assert list((tmp_path / "cache").iterdir()) == []


def make_clean_cache(root):
    """`make clean-cache CACHE=root` with the Makefile's own command lines. ``-o .venv/.installed``: never
    the set-up step, which with ``PY`` = this interpreter would pip-install this checkout into it (a checkout
    without its own .venv, e.g. a git worktree, has no set-up stamp)."""
    done = subprocess.run(
        ["make", "-s", "-o", ".venv/.installed", "clean-cache", f"CACHE={root}", f"PY={sys.executable}"],
        cwd=paths.PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "removed" in done.stdout, done.stdout + done.stderr
    return done.returncode


def test_truncated_cache_file_is_a_data_error_naming_it(small_set, tmp_path):
    frame = read_chexpert(small_set)
    folder = open_cache(frame, 16, tmp_path / "cache", workers=1).folder
    store = folder / "images.npy"
    store.write_bytes(store.read_bytes()[:-100])
    with pytest.raises(DataError, match=rf"{store}: damaged image cache .*Delete the folder"):
        open_cache(frame, 16, tmp_path / "cache", workers=1)


def test_cache_workers_die_with_a_killed_builder(tmp_path):
    csv_path = write_chexpert(tmp_path / "data", chexpert_rows(80))
    script = (
        "import sys; from chexutils.data import cache; from chexutils.data.chexpert import read_chexpert;"
        "cache.CHUNK = 1; cache.load_resized = (lambda real: lambda *a: (__import__('time').sleep(0.5), real(*a))[1])"
        "(cache.load_resized); cache.open_cache(read_chexpert(sys.argv[1]), 16, sys.argv[2], workers=2)"
    )
    builder = subprocess.Popen([sys.executable, "-c", script, str(csv_path), str(tmp_path / "cache")])
    children, deadline = [], time.time() + 120
    while len(children) < 2:
        assert builder.poll() is None and time.time() < deadline
        children = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _ppid(p) == builder.pid]
        time.sleep(0.2)
    builder.send_signal(signal.SIGKILL)
    builder.wait()
    deadline = time.time() + 20
    while any(_alive(pid) for pid in children):
        assert time.time() < deadline, "cache workers outlived the killed builder"
        time.sleep(0.2)


def _ppid(proc):
    try:
        return int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


def _alive(pid):
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


# --- safe output paths ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["..", ".", "../elsewhere", "/tmp/x", ".hidden", "a b", ""])
def test_sweep_name_must_be_a_plain_folder_name(tmp_path, capsys, name):
    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump({"name": name, "steps": [{"notebook": "00_data.ipynb"}]}))
    before = {p: p.read_bytes() for p in paths.NOTEBOOK_DIR.glob("*.ipynb")}
    assert workbook_cli.main(["run", str(config), "--output-root", str(tmp_path / "out")]) == 2
    assert "expected a plain folder name" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in paths.NOTEBOOK_DIR.glob("*.ipynb")} == before
    assert not (tmp_path / "out").exists()


def test_grid_value_that_is_no_folder_name_is_refused(tmp_path):
    config = tmp_path / "sweep.yaml"
    config.write_text(
        yaml.safe_dump(
            {"name": "x", "steps": [{"notebook": "01_explore.ipynb", "per_run": True}], "grid": {"seed": [1, ".."]}}
        )
    )
    with pytest.raises(DataError, match=r"grid run '\.\.' is '\.\.'; expected a plain folder name"):
        workbook.load_config(config, tmp_path / "out")


@pytest.mark.notebooks
def test_runner_never_writes_a_notebook_outside_the_output_root(tmp_path):
    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump({"name": "x", "steps": [{"notebook": "00_data.ipynb"}]}))
    loaded = workbook.load_config(config, tmp_path / "out")
    loaded.name = ".."  # a Config changed in code after loading
    with pytest.raises(DataError, match="plain folder name"):
        workbook.execute(loaded, log=lambda *_: None)
    with pytest.raises(DataError, match="would overwrite the source notebook"):
        runner_guards.check_inside(paths.NOTEBOOK_DIR / "00_data.ipynb", paths.PROJECT_ROOT, "executed notebook")
    with pytest.raises(DataError, match="outside the output folder"):
        runner_guards.check_inside(tmp_path / "out" / ".." / "elsewhere.ipynb", tmp_path / "out", "executed notebook")


# --- images and CSV rows --------------------------------------------------------------------------


@pytest.mark.parametrize("use_cache", [True, False])
def test_decompression_bomb_names_file_and_csv_line(small_set, tmp_path, monkeypatch, use_cache):
    frame = read_chexpert(small_set)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 400)  # the 40 x 48 test images count as 20000 x 20000 ones
    source = image_source(frame.iloc[[0]], 16, "bilinear", False, tmp_path / "cache")
    with pytest.raises(DataError, match=rf"{frame['image'].iloc[0]}: image too large to decode safely.*CSV line 2"):
        if use_cache:
            image_source(frame, 16, "bilinear", True, tmp_path / "cache")
        else:
            source[0]


def test_any_decoder_failure_is_a_data_error(small_set, monkeypatch):
    frame = read_chexpert(small_set)

    def broken(self):
        raise ValueError("buffer is not large enough")

    monkeypatch.setattr(Image.Image, "load", broken)
    with pytest.raises(DataError, match=r"view1_frontal.jpg: cannot decode image \(ValueError: buffer"):
        cache_module.load_resized(frame["image"].iloc[0], 16)


def test_short_csv_row_is_refused_with_file_and_line(small_set):
    text = small_set.read_text().splitlines()
    text[3] = ",".join(text[3].split(",")[:7])  # a row cut off after 7 of 19 fields
    small_set.write_text("\n".join(text[:4]) + "\n")
    with pytest.raises(DataError, match=rf"{small_set} line 4: 7 field\(s\), expected 19"):
        read_chexpert(small_set)


# --- checkpoints and run identity -----------------------------------------------------------------


@pytest.mark.parametrize(
    "content, pattern",
    [
        (b"", r"empty file \(0 bytes\)"),
        (os.urandom(2000), "not a complete torch checkpoint"),
        ("truncated", "not a complete torch checkpoint"),
        ({"model": {}, "epoch": 0}, "missing key\\(s\\) optimizer, scheduler, best, history, rng, config"),
        ([1, 2, 3], "holds a list, not a dict"),
    ],
)
def test_unreadable_checkpoint_is_one_clear_error(tiny_phantom, tmp_path, content, pattern):
    run = tmp_path / "run"
    run.mkdir()
    target = run / "checkpoint.pt"
    if isinstance(content, bytes):
        target.write_bytes(content)
    elif content == "truncated":
        torch.save({"model": {"w": torch.zeros(1000)}}, target)
        target.write_bytes(target.read_bytes()[:3000])
    else:
        torch.save(content, target)
    cfg = tiny_config(tiny_phantom, run)
    if content == b"":  # through the command line once: one line, exit code 2, no traceback
        path = tmp_path / "train.yaml"
        path.write_text(yaml.safe_dump({k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(cfg).items()}))
        done = subprocess.run(
            [sys.executable, "-m", "chexutils", "train", "--config", str(path)],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
        message = done.stderr.strip().splitlines()[-1].removeprefix("error: ")
    else:
        with pytest.raises(CheckpointError) as info:
            fit(cfg)
        message = str(info.value)
    assert re.search(f"^{target}: {pattern}", message), message
    assert "weights_only set to False" not in message and "arbitrary code" not in message
    assert "expected a checkpoint" in message


def test_moved_run_folder_resumes_and_paths_are_normalised(tiny_phantom, tmp_path, monkeypatch):
    first = fit(tiny_config(tiny_phantom, tmp_path / "a" / "run", max_steps_per_epoch=2))
    moved = tmp_path / "b" / "run"
    moved.parent.mkdir()
    first.rename(moved)
    monkeypatch.chdir(paths.PROJECT_ROOT)
    data_dir = os.path.relpath(tiny_phantom.parent, paths.PROJECT_ROOT) + "/"  # relative, trailing slash
    resumed = fit(tiny_config(tiny_phantom, moved, data_dir=data_dir, epochs=2, max_steps_per_epoch=2))
    history = load_checkpoint(resumed / "checkpoint.pt")["history"]
    assert [row["epoch"] for row in history] == [1, 2]  # epoch 1 kept from before the move, epoch 2 added


# --- config validation before work starts ---------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, pattern",
    [
        ({"image_size": "abc"}, r"image_size is 'abc' \(str\); expected int"),
        ({"epochs": 0}, "epochs is 0; expected a number >= 1"),
        ({"lr": -0.1}, "lr is -0.1; expected a number > 0"),
        ({"lr": True}, r"lr is True \(bool\); expected float"),
        ({"betas": [0.9, 1.5]}, r"betas is \[0.9, 1.5\]; expected two numbers in \[0, 1\)"),
        ({"workers": -1}, "workers is -1"),
        ({"policy": "U-Twos"}, "policy is 'U-Twos'; known: U-Ignore"),
        ({"backbone": "resnet"}, "backbone is 'resnet'; known: densenet121"),
        ({"backbone": "xception", "image_size": 224}, "backbone xception needs image_size >= 299, got 224"),
        ({"policy": "U-Ones", "policy_options": {"teacher": "x"}}, "policy U-Ones got unknown option\\(s\\) teacher"),
        ({"policy": "mixed", "policy_options": {"mapping": {"Edema": "U-Twos"}}}, "mixed: unknown|mixed: each"),
        ({"policy": "U-SelfTrained"}, "needs policy_options.teacher"),
        ({"device": "gpu"}, "device is 'gpu'"),
        ({"pretrained": "imagenet", "backbone": "fractalnet"}, "fractalnet has no ImageNet weights"),
    ],
)
def test_bad_training_values_fail_before_any_work(overrides, pattern):
    with pytest.raises(DataError, match=pattern):
        make_config(**overrides)


def test_train_cli_refuses_a_bad_value_with_exit_code_2(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("train:\n  image_size: abc\n  run_dir: " + str(tmp_path / "run") + "\n")
    done = subprocess.run(
        [sys.executable, "-m", "chexutils", "train", "--config", str(path), "--set", "epochs=0"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert re.search(r"error: .*train.yaml: (image_size is 'abc'|epochs is 0)", done.stderr), done.stderr
    assert not (tmp_path / "run").exists()


def test_runner_checks_every_grid_point_at_load_time(tmp_path):
    config = tmp_path / "sweep.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "name": "x",
                "steps": [
                    {"notebook": "00_data.ipynb"},
                    {"notebook": "03_train.ipynb", "per_run": True, "parameters": {"train": {"image_size": 224}}},
                ],
                "grid": {"policy": ["U-Ones", "U-Twos"], "backbone": ["densenet121", "xception"]},
            },
            sort_keys=False,
        )
    )
    with pytest.raises(DataError, match=rf"{config}: run U-Ones_xception, 03_train.ipynb: backbone xception needs"):
        workbook.load_config(config, tmp_path / "out")
    config.write_text(config.read_text().replace("xception", "fractalnet"))
    with pytest.raises(DataError, match=rf"{config}: run U-Twos_densenet121, 03_train.ipynb: policy is 'U-Twos'"):
        workbook.load_config(config, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "value, pattern",
    [
        ({"adam_impl": "fusd"}, r"adam_impl is 'fusd'; known: auto, fused"),
        ({"nproc_per_node": 0}, r"nproc_per_node is 0; expected a number >= 1"),
        ({"lr_scale_rule": "cubic"}, r"lr_scale_rule is 'cubic'; known: none, linear, sqrt"),
        ({"loss_sync_every": 0}, r"loss_sync_every is 0; expected a number >= 1"),
    ],
)
def test_runner_refuses_what_make_config_refuses_at_load_time(tmp_path, value, pattern):
    """One config home: the runner's pre-flight and make_config run the same checks (issue 21)."""
    config = tmp_path / "sweep.yaml"
    steps = [{"notebook": "03_train.ipynb", "per_run": True, "parameters": {"train": value}}]
    config.write_text(yaml.safe_dump({"name": "x", "steps": steps, "grid": {"policy": ["U-Ones"]}}))
    with pytest.raises(DataError, match=rf"{config}: run U-Ones, 03_train.ipynb: {pattern}"):
        workbook.load_config(config, tmp_path / "out")
    with pytest.raises(DataError, match=pattern):
        make_config(**value)
    assert not (tmp_path / "out").exists()


def test_valid_csv_sharing_patients_with_train_csv_is_refused(tiny_phantom, tmp_path):
    train_csv = str(tiny_phantom / "train.csv")
    cfg = tiny_config(tiny_phantom, tmp_path / "run", train_csv=train_csv, valid_csv=train_csv)
    with pytest.raises(DataError, match=r"train.csv: \d+ patient\(s\) also in .*train.csv .*allow_patient_overlap"):
        fit(cfg)
    assert not (tmp_path / "cache").exists()  # refused before any cache was built
    allowed = fit(
        tiny_config(
            tiny_phantom,
            tmp_path / "run",
            train_csv=train_csv,
            valid_csv=train_csv,
            allow_patient_overlap=True,
            max_steps_per_epoch=1,
        )
    )
    assert (allowed / "best.pt").is_file()


# --- re-running ---------------------------------------------------------------------------------


def _tiny_notebook(folder, name):
    """A notebook with a parameters cell (fail, force) that fails when told and records force."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# tiny"),
        nbformat.v4.new_code_cell("fail = False\nforce = False\nout = ''", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("assert not fail, 'told to fail'\nopen(out, 'a').write(f'{force}\\n')"),
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "language": "python", "display_name": "Python 3"}
    nb.metadata["language_info"] = {"name": "python"}
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, folder / name)


@pytest.mark.notebooks
def test_rerun_skips_with_reason_reruns_on_code_change_keeps_last_good_and_forces(tmp_path, monkeypatch, capfd):
    _tiny_notebook(tmp_path / "nb", "t_rerun.ipynb")
    monkeypatch.setattr(paths, "NOTEBOOK_DIR", tmp_path / "nb")
    workbook._declared.cache_clear()
    runner_guards.notebook_defaults.cache_clear()
    config_path = tmp_path / "sweep.yaml"
    record = tmp_path / "record.txt"
    config_path.write_text(
        yaml.safe_dump({"name": "x", "parameters": {"out": str(record)}, "steps": [{"notebook": "t_rerun.ipynb"}]})
    )
    config = workbook.load_config(config_path, tmp_path / "out")
    logs = []
    assert [o.status for o in workbook.execute(config, log=logs.append)] == ["ok"]
    assert [o.status for o in workbook.execute(config, log=logs.append)] == ["skipped"]
    assert "unchanged since it succeeded" in logs[-1] and "--force" in logs[-1]
    monkeypatch.setattr(workbook, "code_digest", lambda: "a changed package")
    assert [o.status for o in workbook.execute(config, log=logs.append)] == ["ok"]
    assert "chexutils changed since it last succeeded" in logs[-2]
    good = (config.output_dir / "notebooks" / "t_rerun.ipynb").read_text()
    config.parameters["fail"] = True
    [failed] = workbook.execute(config, log=logs.append)
    assert failed.status == "failed" and "told to fail" in failed.output.read_text()
    last_good = failed.output.with_name("t_rerun.last-good.ipynb")
    assert last_good.read_text() == good and str(last_good) in logs[-2]
    config.parameters["fail"] = False
    assert [o.status for o in workbook.execute(config, force=True, log=logs.append)] == ["ok"]
    assert "(--force)" in logs[-2] and not last_good.exists()
    assert record.read_text().split() == ["False", "False", "True"]  # force reaches a notebook that declares it
    assert "without encryption" not in capfd.readouterr().err  # the kernels ran with CurveZMQ keys
    workbook._declared.cache_clear()
    runner_guards.notebook_defaults.cache_clear()


def test_a_last_batch_of_one_image_joins_the_batch_before_it(tiny_phantom, tmp_path):
    images = len(read_chexpert(tiny_phantom / "train.csv", check_files=False))
    cfg = tiny_config(tiny_phantom, tmp_path / "run", batch_size=images - 1)  # BatchNorm cannot train on 1 image
    history = load_checkpoint(fit(cfg) / "checkpoint.pt")["history"]
    assert len(history) == 1 and np.isfinite(history[0]["train_loss"])
    assert [len(b) for b in epoch_batches(images, images - 1, True, 0, 0)] == [images]
    assert [len(b) for b in epoch_batches(10, 3, False, 0, 0)] == [3, 3, 4]  # every image trained, none alone
    assert [len(b) for b in epoch_batches(11, 3, False, 0, 0)] == [3, 3, 3, 2]


def test_restart_retrains_a_finished_run(tiny_phantom, tmp_path):
    cfg = tiny_config(tiny_phantom, tmp_path / "run", max_steps_per_epoch=1)
    run = fit(cfg)
    first = (run / "checkpoint.pt").stat().st_mtime_ns
    fit(cfg)  # resuming a finished run trains nothing
    assert (run / "checkpoint.pt").stat().st_mtime_ns == first
    fit(cfg, restart=True)
    assert (run / "checkpoint.pt").stat().st_mtime_ns != first
    assert len(load_checkpoint(run / "checkpoint.pt")["history"]) == 1


# --- everyday use -------------------------------------------------------------------------------


def _make_dry(*args):
    done = subprocess.run(["make", "-n", *args], cwd=paths.PROJECT_ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_make_lab_opens_at_the_root_with_extra_arguments():
    command = _make_dry("lab", "ARGS=--no-browser --port=8899")
    assert f'--ServerApp.root_dir="{paths.PROJECT_ROOT}"' in command and "--no-browser --port=8899" in command
    assert ("--allow-root" in command) == (os.getuid() == 0)


def _run_in_kernel(url: str, token: str, code: str) -> str:
    """Start a kernel through the server's REST API, run ``code`` over its websocket, return what it printed."""
    import asyncio
    import urllib.request
    import uuid

    from tornado.websocket import websocket_connect

    request = urllib.request.Request(f"{url}/api/kernels?token={token}", data=b"{}", method="POST")
    kernel = json.loads(urllib.request.urlopen(request, timeout=60).read())["id"]

    async def run() -> str:
        socket = await websocket_connect(f"{url.replace('http', 'ws')}/api/kernels/{kernel}/channels?token={token}")
        msg_id = uuid.uuid4().hex
        header = {"msg_id": msg_id, "msg_type": "execute_request", "username": "t", "session": "t", "version": "5.3"}
        content = {"code": code, "silent": False, "store_history": False, "user_expressions": {}, "allow_stdin": False}
        message = {"header": header, "parent_header": {}, "metadata": {}, "content": content, "channel": "shell"}
        await socket.write_message(json.dumps(message))
        printed = ""
        while True:
            reply = json.loads(await asyncio.wait_for(socket.read_message(), timeout=120))
            if reply.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            if reply["msg_type"] == "stream":
                printed += reply["content"]["text"]
            if reply["msg_type"] == "status" and reply["content"]["execution_state"] == "idle":
                socket.close()
                return printed

    return asyncio.run(run())


def test_make_lab_kernels_run_encrypted_without_the_plain_tcp_warning(tmp_path):
    import secrets

    port = free_port()
    token = secrets.token_hex(16)
    args = f"ARGS=--no-browser --ip=127.0.0.1 --port={port} --ServerApp.port_retries=0 --IdentityProvider.token={token}"
    log_path = tmp_path / "lab.log"
    with log_path.open("w") as log:
        server = subprocess.Popen(
            ["make", "-s", "lab", args],
            cwd=paths.PROJECT_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_for_jupyter(url, token, server, log_path)
            printed = _run_in_kernel(url, token, "import zmq, sys; print('kernel ok', sys.prefix)")
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=60)
    assert printed.startswith("kernel ok") and printed.split()[-1].endswith(".venv")  # the project's interpreter
    text = log_path.read_text()
    assert "Kernel started" in text and "without encryption" not in text


def test_setup_says_what_it_does_and_shows_pip_progress():
    recipe = _make_dry("-B", "setup")  # -B: as on a fresh clone
    assert "installing chexutils and its pinned dependencies" in recipe
    [pip] = [line for line in recipe.splitlines() if "pip install" in line]
    assert "--quiet" not in pip and " -q" not in pip and "--progress-bar on" in pip


def test_make_demo_force_and_clean_cache():
    assert "workbook run configs/demo.yaml --jobs 2 --force" in _make_dry("demo", "FORCE=1")
    assert "--force" not in _make_dry("demo")
    assert "--jobs 1" in _make_dry("demo", "JOBS=1")  # two grid points at once by default; serial on request
    assert "cache_admin clean" in _make_dry("clean-cache")


def test_demographics_show_counts_and_shares_of_their_own_unit(tmp_path):
    from chexutils.data import explore

    csv_path = write_chexpert(tmp_path, chexpert_rows(6))
    table = explore.demographics(read_chexpert(csv_path))  # 3 patients: Male 40, Female 42, Female 44
    assert table.loc["Male", "this data set"] == "1 patients (33.3%)"
    assert table.loc["Female", "this data set"] == "2 patients (66.7%)"
    assert table.loc["Male", "real train.csv"] == "132,636 images (59.4%)"
    assert table.loc["age mean (SD)", "this data set"] == "42.0 (2.0)" and table.loc["age range"].tolist() == [
        "40–44",
        "0–90",
    ]


def test_report_starts_with_what_was_run_and_has_no_raw_dicts(tmp_path):
    from chexutils.evaluation import compare

    config = workbook.load_config(paths.CONFIG_DIR / "demo.yaml", tmp_path / "out")
    config.output_dir.mkdir(parents=True)
    compare.write_comparison(
        config.output_dir,
        {
            "Ensemble of all runs, mean AUROC over the 5 tasks": str(
                {
                    "mean": 0.712345678901234,
                    "ci_low": 0.65012345678,
                    "ci_high": 0.7701234567,
                    "dropped": 0,
                    "tasks": ["Atelectasis", "Edema"],
                    "left_out": {},
                }
            )
        },
    )
    text = write_report(config, []).read_text()
    head = text.split("## Steps")[0]
    assert (
        "generated phantom CheXpert (320 train + 100 valid + 150 official test patients, 128 × 104 px, mimics drawn as "
        "faint-sign, hand-set label noise) in `data/phantom-demo`" in head
    )
    assert "64 px" in head and "2 epoch(s)" in head and "trained from scratch" in head and "lr 0.001" in head
    assert (
        "**Runs:** 5: 4 from the grid (policy: U-Zeros, U-Ones; backbone: densenet121; seed: 0, 1) + 1 named in a step (mixed-selected)"
        in head
    )
    assert "Official valid = official valid" in head
    assert "0.712 (95% CI 0.650–0.770); dropped: 0; tasks: Atelectasis, Edema\n" in text  # no empty left_out
    assert "{" not in text and "[" not in text and "0.7123" not in text


def test_second_runner_on_one_sweep_stops_naming_the_holder(tmp_path, capsys):
    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump({"name": "x", "steps": [{"notebook": "00_data.ipynb"}]}))
    sweep = tmp_path / "out" / "x"
    with locks.exclusive(sweep / ".lock", "test"):
        assert workbook_cli.main(["run", str(config), "--output-root", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"sweep folder {sweep} is being written by pid {os.getpid()} on host" in err
    assert not (sweep / "notebooks").exists()
