"""The run folder owns its file names; old run folders are still read."""

import json

import pytest

from chexutils.core.errors import DataError
from chexutils.core.rundir import EVAL_SETS, HELD_OUT, OFFICIAL_VALID, RunDir, find_runs


def test_file_names_per_evaluation_set(tmp_path):
    run = RunDir(tmp_path / "r")
    assert run.predictions(OFFICIAL_VALID).name == "predictions_official_valid.csv"
    assert run.metrics(HELD_OUT).name == "metrics_held_out.json"
    assert {run.predictions(s).name for s in EVAL_SETS} == {f"predictions_{s}.csv" for s in EVAL_SETS}
    with pytest.raises(DataError, match="unknown evaluation set 'valid'"):
        run.predictions("valid")


def test_legacy_names_are_read_only_when_the_new_file_is_missing(tmp_path):
    run = RunDir(tmp_path)
    (tmp_path / "metrics_test.json").write_text("{}")
    assert run.metrics(HELD_OUT).name == "metrics_test.json"
    (tmp_path / "metrics_held_out.json").write_text("{}")
    assert run.metrics(HELD_OUT).name == "metrics_held_out.json"


def test_config_and_find_runs(tmp_path):
    for name, finished in [("a", True), ("b", False), ("c", True)]:
        run = RunDir(tmp_path / name)
        run.path.mkdir()
        run.config_file.write_text(json.dumps({"policy": name}))
        if finished:
            run.best.write_bytes(b"x")
    assert [r.name for r in find_runs(tmp_path)] == ["a", "c"]
    assert find_runs(tmp_path)[1].config() == {"policy": "c"}
    with pytest.raises(DataError, match="config.json: file does not exist"):
        RunDir(tmp_path / "missing").config()
    (tmp_path / "a" / "config.json").write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        RunDir(tmp_path / "a").config()
