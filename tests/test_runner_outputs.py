"""The runner notices a step's outputs changed behind its back (issue 22): the success marker records a
digest of each file the step wrote, and a changed or deleted output re-runs the step instead of a skip."""

import json
from pathlib import Path

import nbformat
import pytest
import yaml

from chexutils.core import paths
from chexutils.workbook import guards
from chexutils.workbook import runner as workbook


@pytest.fixture
def writer_notebooks(tmp_path, monkeypatch):
    """Notebooks declaring ``out``, ``name`` and ``text``; papermill replaced by a stand-in writing ``text`` to
    ``out/name`` (a folder parameter: the file is an output only, not an input the parameters name)."""
    (tmp_path / "nb").mkdir()
    for name in ("a", "b"):
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_code_cell("out = ''\nname = ''\ntext = ''", metadata={"tags": ["parameters"]})]
        nb.metadata["kernelspec"] = {"name": "python3", "language": "python", "display_name": "Python 3"}
        nbformat.write(nb, tmp_path / "nb" / f"{name}.ipynb")
    monkeypatch.setattr(paths, "NOTEBOOK_DIR", tmp_path / "nb")
    workbook._declared.cache_clear()
    guards.notebook_defaults.cache_clear()
    executed = []

    def execute_notebook(source, output, parameters, **options):
        executed.append(Path(source).stem)
        Path(output).write_text(Path(source).read_text())
        (Path(parameters["out"]) / parameters["name"]).write_text(parameters["text"])

    monkeypatch.setattr(workbook.papermill, "execute_notebook", execute_notebook)
    yield executed
    workbook._declared.cache_clear()
    guards.notebook_defaults.cache_clear()


def _sweep(tmp_path, steps) -> workbook.Config:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({"name": "outputs", "steps": steps}))
    return workbook.load_config(path, tmp_path / "out")


def test_a_changed_or_deleted_output_reruns_the_step_that_wrote_it(tmp_path, writer_notebooks):
    config = _sweep(
        tmp_path,
        [
            {
                "notebook": "a.ipynb",
                "parameters": {"out": "{output_dir}", "name": "mixed_mapping.json", "text": '{"x": 1}'},
            }
        ],
    )
    logs = []
    run = lambda: [o.status for o in workbook.execute(config, log=logs.append)]
    assert run() == ["ok"]
    marker = json.loads((config.output_dir / ".done" / "a.json").read_text())
    assert list(marker["outputs"]) == ["mixed_mapping.json"]
    assert run() == ["skipped"]
    mapping = config.output_dir / "mixed_mapping.json"
    mapping.write_text('{"x": 2}')  # edited by hand
    assert run() == ["ok"]
    assert "outputs changed since the last run: mixed_mapping.json; re-running" in logs[-2]
    assert mapping.read_text() == '{"x": 1}'
    assert run() == ["skipped"]
    mapping.unlink()
    assert run() == ["ok"] and mapping.is_file()
    assert writer_notebooks == ["a", "a", "a"]


def test_a_file_rewritten_by_a_later_step_belongs_to_that_step_and_both_skip(tmp_path, writer_notebooks):
    out = {"out": "{output_dir}", "name": "comparison.md"}
    config = _sweep(
        tmp_path,
        [
            {"notebook": "a.ipynb", "parameters": {**out, "text": "first"}},
            {"notebook": "b.ipynb", "parameters": {**out, "text": "second"}},
        ],
    )
    run = lambda: [o.status for o in workbook.execute(config, log=lambda *_: None)]
    assert run() == ["ok", "ok"]
    assert run() == ["skipped", "skipped"]  # a's record no longer vouches for what b rewrote
    (config.output_dir / "comparison.md").write_text("changed by hand")
    assert run() == ["skipped", "ok"]  # the step that wrote it last runs again
    assert (config.output_dir / "comparison.md").read_text() == "second"


def test_hidden_files_notebooks_and_caches_are_not_outputs(tmp_path):
    (tmp_path / ".done").mkdir()
    (tmp_path / ".done" / "x.json").write_text("{}")
    (tmp_path / "cache" / "abc").mkdir(parents=True)
    (tmp_path / "cache" / "abc" / ".chexutils-cache").write_text("")
    (tmp_path / "cache" / "abc" / "images.npy").write_text("")
    (tmp_path / "run.ipynb").write_text("{}")
    (tmp_path / "run" / "figures").mkdir(parents=True)
    (tmp_path / "run" / "figures" / "roc.png").write_bytes(b"png")
    assert list(guards.written_since(tmp_path, 0, tmp_path)) == ["run/figures/roc.png"]
