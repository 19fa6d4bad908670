"""Run All works straight after `make demo` (issue 22): a tiny demo runs in a temporary copy of the repository
through the Makefile's own `make demo` recipe, then every numbered notebook runs there with its OWN parameters
cell — no value injected but the same smaller sizes the tiny demo used — so every path a default names
(data/phantom-demo, output/demo, its split, run U-Ones_densenet121_seed0) must be what the demo wrote.

The tiny demo is configs/demo.yaml (its name, paths, steps) with smaller sizes, the grid's first seed only and
stage 1 only (the defaults name no stage-2 file; the two-stage loop is tests/test_workbook.py's), to keep the
test to minutes. The copy keeps the real output/ and data/ untouched: the kernels import the copy's chexutils
(PYTHONPATH), whose PROJECT_ROOT is the copy."""

import copy
import json
import os
import shlex
import shutil
import subprocess
import sys

import papermill
import pytest
import yaml

from chexutils.cli import public_labels
from chexutils.core import paths
from chexutils.evaluation.official_test import ENSEMBLE
from chexutils.workbook import headline
from chexutils.workbook.guards import notebook_defaults

pytestmark = pytest.mark.notebooks  # executes notebooks: make test-fast leaves these out

# The only values given to a notebook: sizes (phantom, images, epochs, resamples, sampled images), never a path
# or a name. The tiny demo is configs/demo.yaml with exactly these values.
SMALLER = {
    "phantom_patients": 40,
    "phantom_valid_patients": 12,
    "phantom_test_patients": 30,
    "phantom_size": [64, 52],
    "n_resamples": 50,
    "max_images": 10,
    "png_images": 2,
}
TRAIN_SMALLER = {"image_size": 32, "epochs": 1, "batch_size": 16}
NOTEBOOKS = sorted(p.name for p in paths.NOTEBOOK_DIR.glob("0*.ipynb"))
DEMO_INPUTS = [n for n in NOTEBOOKS if "labels_dir" not in notebook_defaults(n)]  # 09 reads make public-labels'


def tiny_demo_config() -> dict:
    """configs/demo.yaml (name, steps, grid, every path) with the SMALLER sizes, the first seed, stage 1 only."""
    config = yaml.safe_load((paths.CONFIG_DIR / "demo.yaml").read_text())
    config["grid"]["seed"] = config["grid"]["seed"][:1]
    stage2 = next(i for i, step in enumerate(config["steps"]) if "runs" in step)
    config["steps"] = config["steps"][:stage2] + [
        step for step in config["steps"][stage2:] if "runs" not in step and step["notebook"] != "05_compare.ipynb"
    ]
    config["parameters"].update({k: v for k, v in SMALLER.items() if k.startswith("phantom_")})
    config["parameters"]["n_resamples"] = SMALLER["n_resamples"]
    for step in config["steps"]:
        params = step["parameters"] = copy.deepcopy(step.get("parameters") or {})  # anchors share one mapping
        if "train" in params:
            params["train"] = {**params["train"], **TRAIN_SMALLER}
        params.update({k: v for k, v in SMALLER.items() if k in params})
    return config


def smaller_for(notebook: str) -> dict:
    """The sizes this notebook declares, as the tiny demo gave them (its paths and names stay the defaults)."""
    defaults = notebook_defaults(notebook)
    values = {k: v for k, v in SMALLER.items() if k in defaults}
    if "train" in defaults:
        demo_train = next(s["parameters"]["train"] for s in tiny_demo_config()["steps"] if s["notebook"] == notebook)
        values["train"] = demo_train
    return values


def make_demo(*variables: str) -> list[str]:
    """The command `make demo VARIABLES` runs (read with make -n; this interpreter for .venv/bin/python)."""
    dry = subprocess.run(["make", "-n", "demo", *variables], cwd=paths.PROJECT_ROOT, capture_output=True, text=True)
    [line] = [line for line in dry.stdout.splitlines() if " -m chexutils workbook run " in line]
    words = shlex.split(line)
    assert words[0] == ".venv/bin/python", line
    return [sys.executable, *words[1:]]


@pytest.fixture(scope="module")
def demo_copy(tmp_path_factory):
    """A copy of the repository's package, notebooks and configs after the tiny demo; the kernels' env points at it."""
    root = tmp_path_factory.mktemp("repo")
    for folder in ("chexutils", "notebooks", "configs"):
        shutil.copytree(paths.PROJECT_ROOT / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "tiny-demo.yaml").write_text(yaml.safe_dump(tiny_demo_config(), sort_keys=False))
    # the demo's recorded figure names with values so far apart that any run is inside: the plumbing is checked
    names = headline.read_spread(paths.CONFIG_DIR / "demo.yaml")["figures"]
    wide = [
        (f"repeat{i}", {"figures": {n: v * 10.0**5 for n in names}, "machine": "m"}) for i, v in enumerate([-1, 0, 1])
    ]
    (root / "tiny-demo.spread.json").write_text(json.dumps(headline.spread_of(wide)))
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        make_demo("CONFIG=tiny-demo.yaml", "JOBS=1"),
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    (root / "demo-stdout.txt").write_text(run.stdout)
    assert (root / "output" / "demo" / "report.md").is_file() and not (paths.OUTPUT_DIR / "tiny-demo").exists()
    return root, env


def test_the_tiny_demo_is_the_demo_with_smaller_sizes_and_its_first_stage():
    demo, tiny = yaml.safe_load((paths.CONFIG_DIR / "demo.yaml").read_text()), tiny_demo_config()
    assert tiny["name"] == demo["name"] == "demo" and tiny["grid"] == {**demo["grid"], "seed": demo["grid"]["seed"][:1]}
    stage1 = [s for s in demo["steps"] if "runs" not in s]
    stage1.remove(stage1[[s["notebook"] for s in stage1].index("05_compare.ipynb", 5)])  # 05 again after stage 2
    assert [s["notebook"] for s in tiny["steps"]] == [s["notebook"] for s in stage1]
    assert {s["notebook"] for s in tiny["steps"]} == {s["notebook"] for s in demo["steps"]}
    for before, after in zip(stage1, tiny["steps"]):
        changed = {
            k for k in after.get("parameters", {}) if after["parameters"][k] != before.get("parameters", {}).get(k)
        }
        assert changed <= set(SMALLER) | {"train"}, changed


@pytest.mark.parametrize("notebook", sorted(set(NOTEBOOKS) - set(DEMO_INPUTS)))
def test_a_notebook_that_reads_no_demo_output_defaults_to_what_its_make_target_writes(notebook):
    # 09 reads the public test-set files alone; its default is where `make public-labels` clones them
    default = notebook_defaults(notebook)["labels_dir"]
    assert paths.resolve(default) == paths.DATA_DIR / public_labels.LABELS_REPO


@pytest.mark.parametrize("notebook", DEMO_INPUTS)
def test_defaults_name_the_demos_folders(notebook):
    defaults, demo = notebook_defaults(notebook), yaml.safe_load((paths.CONFIG_DIR / "demo.yaml").read_text())
    assert defaults["output_dir"] == f"output/{demo['name']}"
    shared = {k: v for k, v in demo["parameters"].items() if k in defaults}
    assert {k: defaults[k] for k in shared} == shared  # data_dir, phantom sizes, seed: what make demo passes
    if "run_name" in defaults:
        assert defaults["run_name"] == "U-Ones_densenet121_seed0"  # a grid point of the demo


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make (the tiny demo runs through its recipe)")
def test_run_all_works_in_every_notebook_straight_after_the_demo(demo_copy, monkeypatch):
    root, env = demo_copy
    monkeypatch.setenv("PYTHONPATH", env["PYTHONPATH"])  # the kernels import the copy, whose root is the copy
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    failed = {}
    for notebook in DEMO_INPUTS:
        try:
            papermill.execute_notebook(
                str(root / "notebooks" / notebook),
                str(root / f"run-all-{notebook}"),
                parameters=smaller_for(notebook),
                cwd=str(root / "notebooks"),  # where JupyterLab runs a notebook
                progress_bar=False,
            )
        except papermill.PapermillExecutionError as err:
            failed[notebook] = f"{err.ename}: {err.evalue}"[:400]
    assert failed == {}
    assert (root / "output" / "demo" / "phantom_check.md").is_file()  # 07, which make demo does not run


def test_the_demo_writes_its_headline_figures_and_judges_them_against_the_recorded_spread(demo_copy):
    root, _ = demo_copy
    figures = json.loads((root / "output" / "demo" / headline.HEADLINE_JSON).read_text())["figures"]
    recorded = headline.read_spread(paths.CONFIG_DIR / "demo.yaml")["figures"]
    # the tiny demo writes figures by the names the spread was recorded with (its 12 valid patients give no
    # 5-task mean on official valid, so its arms have no figure; the ensemble's 30 test studies do)
    assert set(figures) <= set(recorded)
    assert {f"official test mean AUROC, {ENSEMBLE}", headline.SECONDS} <= set(figures)
    assert 0.0 <= figures[f"official test mean AUROC, {ENSEMBLE}"] <= 1.0
    report = (root / "output" / "demo" / "report.md").read_text()
    # the report's summary, on the demo's own steps: what ran, the model reported and where, 08's scores
    shows = report.split("## What this sweep shows")[1].split("## What was run")[0]
    assert "**Runs:** 2 compared" in shows and "U-Ones_densenet121_seed0" in shows
    assert "**Ranking:**" in shows and "**Reported model:**" in shows and "on the official test set" in shows
    assert "**Localisation** (notebook 08" in shows
    table = report.split("## This run against the recorded spread")[1].split("## Steps")[0]
    assert table.count("| yes |") == len(figures)
    stdout = (root / "demo-stdout.txt").read_text()
    assert f"{len(figures)} of {len(figures)} headline figures inside the 95% prediction intervals" in stdout
