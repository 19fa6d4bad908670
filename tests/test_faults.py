"""Faults and misuse, part two (issue 20): each case driven through the command line a user types."""

import hashlib

import pytest
import torch
from test_import_checkpoint import xrv_reference, xrv_state

from chexutils.cli import import_checkpoint as import_cli
from chexutils.core import locks
from chexutils.core.rundir import RunDir

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
