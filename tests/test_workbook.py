"""The papermill runner: config checks, notebooks 00-02 on a tiny phantom, resume, failure handling."""

import json
import re

import nbformat
import pandas as pd
import pytest

from chexutils import workbook
from chexutils.errors import DataError
from chexutils.workbook import execute, load_config, main, write_report

from conftest import TINY_PHANTOM


def _config(tmp_path, text: str):
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    return path


SERIES = """
name: tiny
parameters:
  data_dir: {data}
  phantom: true
  phantom_patients: {patients}
  phantom_valid_patients: {valid}
  phantom_size: [{w}, {h}]
  seed: {seed}
steps:
  - notebook: 00_data.ipynb
  - notebook: 01_explore.ipynb
    parameters: {{sample_per_finding: 2}}
  - notebook: 02_split.ipynb
  - notebook: 03_train.ipynb
    per_run: true
    parameters:
      train_csv: "{{output_dir}}/split/data_train.csv"
      valid_csv: "{{output_dir}}/split/data_valid.csv"
      image_size: 32
      epochs: 1
      batch_size: 16
  - notebook: 04_evaluate.ipynb
    per_run: true
    parameters: {{test_csv: "{{output_dir}}/split/data_test.csv", n_resamples: 200}}
  - notebook: 05_compare.ipynb
    parameters: {{test_csv: "{{output_dir}}/split/data_test.csv", n_resamples: 200}}
  - notebook: 07_look_inside.ipynb
    parameters: {{run_dir: "{{output_dir}}/U-Ones", max_images: 20, png_images: 2, n_resamples: 100}}
grid:
  policy: [U-Zeros, U-Ones, U-MultiClass]
"""


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    """Run notebooks 00-02 once through the runner's command line; return the sweep folder."""
    root = tmp_path_factory.mktemp("workbook")
    text = SERIES.format(data=root / "data", patients=TINY_PHANTOM["patients"], valid=TINY_PHANTOM["valid_patients"],
                         w=TINY_PHANTOM["size"][0], h=TINY_PHANTOM["size"][1], seed=TINY_PHANTOM["seed"])
    config = _config(root, text)
    assert main(["run", str(config), "--output-root", str(root / "out")]) == 0
    return root, config, root / "out" / "tiny"


def test_series_writes_the_files_later_steps_read(series):
    root, _, out = series
    record = json.loads((out / "data.json").read_text())
    assert record["chexpert_dir"] == str(root / "data" / "CheXpert-v1.0-small")
    assert record["summary"]["valid"]["patients"] == TINY_PHANTOM["valid_patients"]
    rates = pd.read_csv(out / "tables" / "label_rates.csv", index_col=0)
    assert rates.loc["No Finding", "uncertain"] == 0 and rates.loc["Edema", "uncertain"] > 0
    for name in ("label_rates", "uncertain_vs_real", "distributions", "cooccurrence", "samples", "split_prevalence"):
        assert (out / "figures" / f"{name}.png").stat().st_size > 1000, name
    summary = pd.read_csv(out / "split" / "split_summary.csv", index_col=0)
    assert (summary["shared patients"] == 0).all()
    assert summary["images"].sum() == record["summary"]["train"]["images"]
    for split in ("train", "valid", "test"):
        assert (out / "split" / f"data_{split}.csv").is_file()
    for nb in ("00_data", "01_explore", "02_split"):
        executed = nbformat.read(out / "notebooks" / f"{nb}.ipynb", as_version=4)
        assert any("injected-parameters" in c.metadata.get("tags", []) for c in executed.cells)
    assert re.search(r"\| 02_split\.ipynb \| +\| ok \|", (out / "report.md").read_text())


def test_train_step_runs_once_per_grid_point_on_the_split(series):
    _, _, out = series
    for policy, head in (("U-Zeros", "binary"), ("U-Ones", "binary"), ("U-MultiClass", "multiclass")):
        run = out / policy
        config = json.loads((run / "config.json").read_text())
        assert config["policy"] == policy and config["head"] == head and config["image_size"] == 32
        assert config["train_csv"] == str(out / "split" / "data_train.csv")
        assert len(pd.read_csv(run / "history.csv")) == 1
        assert (run / "best.pt").is_file() and (run / "learning_curves.png").stat().st_size > 1000
        assert (run / "03_train.ipynb").is_file()
    assert len(list((out / "cache").iterdir())) == 4  # one per CSV (split train/valid/test, official valid), shared


def test_evaluate_writes_study_level_metrics_with_ci_and_curves(series):
    _, _, out = series
    for policy in ("U-Zeros", "U-Ones", "U-MultiClass"):
        run = out / policy
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["summary"]["split"] == "valid" and metrics["summary"]["resampled"] == "patients"
        edema = metrics["observations"]["Edema"]
        if edema["auroc"] is not None:
            assert edema["ci_low"] <= edema["auroc"] <= edema["ci_high"]
        else:
            assert "one class" in edema["note"]
        predictions = pd.read_csv(run / "predictions_test.csv")
        assert predictions["Edema"].between(0, 1).all()
        assert (run / "metrics_test.json").is_file()
        for name in ("roc.png", "pr.png"):
            assert (run / name).stat().st_size > 10_000


def test_compare_writes_the_tables_mapping_and_report(series):
    _, _, out = series
    mapping = json.loads((out / "mixed_mapping.json").read_text())
    assert set(mapping.values()) <= {"U-Zeros", "U-Ones"} and len(mapping) == 14
    comparison = (out / "comparison.md").read_text()
    for section in ("AUROC on the official valid set", "Per-label choice on held-out patients",
                    "Phantom: planted truth vs choice", "Ensemble of all runs"):
        assert section in comparison
    edema = json.loads((out / "U-Ones" / "metrics.json").read_text())["observations"]["Edema"]
    if edema["auroc"] is not None:  # the table shows each run's AUROC with its CI, as in metrics.json
        assert f"{edema['auroc']:.3f} ({edema['ci_low']:.3f}–{edema['ci_high']:.3f})" in comparison
    assert (out / "figures" / "comparison.png").stat().st_size > 10_000
    assert (out / "ensemble-all" / "metrics.json").is_file()
    assert "Per-label choice" in (out / "report.md").read_text()


def test_look_inside_scores_heatmaps_of_one_run_against_the_drawn_regions(series):
    _, _, sweep = series
    run = sweep / "U-Ones"
    scores = pd.read_csv(run / "localisation.csv")
    per_image = pd.read_csv(run / "localisation_images.csv")
    assert {"observation", "kind", "n", "iou", "iou_lo", "iou_hi", "hit_rate", "hit_lo", "hit_hi", "chance"} <= set(scores)
    assert per_image["Path"].nunique() <= 20 and scores["n"].sum() == len(per_image) > 0
    assert set(scores["kind"]) <= {"clear", "faint", "mimic"}
    assert (run / "heatmap_gallery.png").stat().st_size > 0
    pngs = pd.read_csv(run / "heatmaps" / "heatmaps.csv")
    assert len(pngs) == 2 * 14 and all((run / "heatmaps" / p.split("/")[-1]).is_file() for p in pngs["png"])
    assert not (sweep / "U-Zeros" / "localisation.csv").exists()  # one run only


def test_second_run_skips_unchanged_steps(series):
    _, config, out = series
    outcomes = execute(load_config(config, out.parent), log=lambda *_: None)
    assert [o.status for o in outcomes] == ["skipped"] * 10


def test_failing_notebook_is_kept_with_its_error_and_stops_the_series(tmp_path):
    config = load_config(_config(tmp_path, """
name: broken
parameters: {data_dir: nowhere, phantom: false}
steps: [{notebook: 00_data.ipynb}, {notebook: 01_explore.ipynb}]
"""), tmp_path / "out")
    outcomes = execute(config, log=lambda *_: None)
    assert [o.status for o in outcomes] == ["failed"]
    assert "DataError" in outcomes[0].error and "nowhere" in outcomes[0].error
    executed = nbformat.read(outcomes[0].output, as_version=4)
    assert any(out.get("ename") == "DataError" for c in executed.cells for out in c.get("outputs", []))
    report = write_report(config, outcomes)
    assert "failed" in report.read_text()
    assert main(["run", str(config.path), "--output-root", str(tmp_path / "out")]) == 1


def test_grid_runs_per_run_steps_once_per_point(tmp_path):
    config = load_config(_config(tmp_path, """
name: grid
parameters: {data_dir: nowhere}
steps: [{notebook: 01_explore.ipynb, per_run: true}]
grid: {seed: [1, 2]}
"""), tmp_path / "out")
    assert [name for name, _ in config.runs()] == ["1", "2"]
    params = workbook.step_parameters(config, config.steps[0], config.runs()[1])
    assert params["seed"] == 2 and params["output_dir"] == str(tmp_path / "out" / "grid")
    outcomes = execute(config, log=lambda *_: None)  # both runs fail (no data) but both are tried
    assert [(o.run, o.status) for o in outcomes] == [("1", "failed"), ("2", "failed")]
    assert (tmp_path / "out" / "grid" / "2" / "01_explore.ipynb").is_file()


@pytest.mark.parametrize("text, pattern", [
    ("name: x\nsteps: [{notebook: 00_data.ipynb}]\nparameters: {data_dri: data}\n", "data_dri, which no step's notebook declares"),
    ("name: x\nsteps: [{notebook: 99_missing.ipynb}]\n", "99_missing.ipynb"),
    ("name: x\nstep: []\n", "unknown key"),
    ("steps: [{notebook: 00_data.ipynb}]\n", "'name'"),
    ("name: x\nsteps: []\n", "at least one notebook"),
    ("name: x\nsteps: [{notebook: 00_data.ipynb}]\ngrid: {seed: 3}\n", "non-empty list"),
    ("name: x\nsteps: [\n  {notebook: 00_data.ipynb\n", r"line \d+: not valid YAML"),
])
def test_bad_config_is_a_data_error_naming_the_file(tmp_path, text, pattern):
    path = _config(tmp_path, text)
    with pytest.raises(DataError, match=pattern) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_cli_reports_config_errors_with_exit_code_2(tmp_path, capsys):
    assert main(["run", str(tmp_path / "missing.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
