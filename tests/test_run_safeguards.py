"""Safeguards of running things: a same-size edit of an image gets a fresh cache, a sweep's chain stops
at its first failure, a step whose executed notebook is gone runs again, Grad-CAM hooks the map the
head pools, and an infinite loss stops training as a NaN does."""

import os
from pathlib import Path
from types import SimpleNamespace

import nbformat
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from chexutils.core import paths
from chexutils.data.cache import file_stamps, load_resized, open_cache
from chexutils.explain.heatmaps import cam_layer
from chexutils.models.backbones import build_model
from chexutils.training.train import TrainingDiverged, _check_loss
from chexutils.workbook import guards, parallel
from chexutils.workbook import runner as workbook


def _uncompressed_png(path: Path, seed: int) -> None:
    """A 20 x 20 grey PNG stored without compression: its size depends on its shape, not its pixels."""
    pixels = np.random.default_rng(seed).integers(0, 256, (20, 20), dtype=np.uint8)
    Image.fromarray(pixels, mode="L").save(path, compress_level=0)


def test_an_image_rewritten_with_the_same_size_gets_a_fresh_cache(tmp_path):
    images = [tmp_path / f"{i}.png" for i in range(3)]
    for i, path in enumerate(images):
        _uncompressed_png(path, i)
    frame = pd.DataFrame({"image": [str(p) for p in images], "line": [2, 3, 4]})
    first = open_cache(frame, 16, tmp_path / "cache", workers=1)
    before = images[0].stat()
    _uncompressed_png(images[0], seed=99)  # other pixels, same byte count
    os.utime(images[0], ns=(before.st_atime_ns, before.st_mtime_ns + 5_000_000_000))  # a later mtime, surely
    assert images[0].stat().st_size == before.st_size
    stamps = file_stamps([str(images[0])])
    assert stamps[0, 0] == before.st_size and stamps[0, 1] == before.st_mtime_ns + 5_000_000_000
    second = open_cache(frame, 16, tmp_path / "cache", workers=1)
    assert second.folder != first.folder
    np.testing.assert_array_equal(second.images[0], load_resized(images[0], 16))
    assert not np.array_equal(second.images[0], first.images[0])


def test_a_grid_points_chain_stops_at_its_first_failed_step(monkeypatch):
    steps = [SimpleNamespace(notebook=f"0{i}_step.ipynb", runs=None) for i in range(3)]
    config = SimpleNamespace(steps=steps, runs=lambda: [("U-Zeros", {"policy": "U-Zeros"})])
    ran = []

    def execute_step(config, step, run, force, log):
        ran.append(step.notebook)
        status = "failed" if step.notebook == "01_step.ipynb" else "ok"
        return workbook.Outcome(step.notebook, run[0], status, 0.0, Path("/nowhere") / step.notebook)

    monkeypatch.setattr(parallel.workbook, "load_config", lambda path, root: config)
    monkeypatch.setattr(parallel.workbook, "execute_step", execute_step)
    outcomes = parallel.run_chain("sweep.yaml", "output", "U-Zeros", [0, 1, 2], False, {})
    assert ran == ["00_step.ipynb", "01_step.ipynb"]  # 02 would work on what 01 failed to make
    assert [(o["step"], o["status"]) for o in outcomes] == [("00_step.ipynb", "ok"), ("01_step.ipynb", "failed")]


@pytest.fixture
def tiny_notebook(tmp_path, monkeypatch):
    """A one-parameter notebook in a notebook folder of its own; papermill replaced by a copy (no kernel)."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("out = ''", metadata={"tags": ["parameters"]})]
    nb.metadata["kernelspec"] = {"name": "python3", "language": "python", "display_name": "Python 3"}
    (tmp_path / "nb").mkdir()
    nbformat.write(nb, tmp_path / "nb" / "t_gone.ipynb")
    monkeypatch.setattr(paths, "NOTEBOOK_DIR", tmp_path / "nb")
    workbook._declared.cache_clear()
    guards.notebook_defaults.cache_clear()
    executed = []

    def execute_notebook(source, output, parameters, **options):
        executed.append(parameters)
        Path(output).write_text(Path(source).read_text())

    monkeypatch.setattr(workbook.papermill, "execute_notebook", execute_notebook)
    yield executed
    workbook._declared.cache_clear()
    guards.notebook_defaults.cache_clear()


def test_a_step_whose_executed_notebook_is_gone_runs_again(tmp_path, tiny_notebook):
    config_path = tmp_path / "sweep.yaml"
    config_path.write_text(
        yaml.safe_dump({"name": "x", "parameters": {"out": "y"}, "steps": [{"notebook": "t_gone.ipynb"}]})
    )
    config = workbook.load_config(config_path, tmp_path / "out")
    logs = []
    assert [o.status for o in workbook.execute(config, log=logs.append)] == ["ok"]
    [again] = workbook.execute(config, log=logs.append)
    assert again.status == "skipped" and again.output.is_file()
    again.output.unlink()  # the success marker stays, the notebook it vouches for does not
    [rerun] = workbook.execute(config, log=logs.append)
    assert rerun.status == "ok" and rerun.output.is_file() and len(tiny_notebook) == 2
    assert "no successful run recorded" in "\n".join(logs[-3:])


@pytest.mark.parametrize("backbone,size", [("densenet121", 64), ("xrv-densenet121", 64), ("xception", 299)])
def test_cam_layer_output_is_the_trunks_final_output(backbone, size):
    """Grad-CAM explains the map the head pools: the CAM layer's output is the trunk's output itself
    (for the DenseNets norm5, after denseblock4; an earlier layer would explain un-normalised maps)."""
    torch.manual_seed(0)
    model = build_model(backbone).eval()
    seen = {}
    hooks = [
        cam_layer(model).register_forward_hook(lambda m, i, out: seen.update(cam=out)),
        model.features.trunk.register_forward_hook(lambda m, i, out: seen.update(trunk=out)),
    ]
    images = torch.randint(0, 256, (1, 1, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    try:
        with torch.no_grad():
            model(images)
    finally:
        for hook in hooks:
            hook.remove()
    assert seen["cam"].shape == seen["trunk"].shape and torch.equal(seen["cam"], seen["trunk"])


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_an_infinite_or_nan_loss_stops_training(value):
    with pytest.raises(TrainingDiverged, match=f"loss became {value} at epoch 2, between steps 4 and 7"):
        _check_loss(torch.tensor(value), 10, "binary", epoch=1, checked=3, step=6)
    # a large but not exploded mean loss goes on (the limit is 1000 x ln 2 per image for the binary head)
    assert _check_loss(torch.tensor(10 * 600.0), 10, "binary", epoch=1, checked=3, step=6) == 7
