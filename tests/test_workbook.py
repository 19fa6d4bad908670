"""The papermill runner: config checks, notebooks 00-02 on a tiny phantom, resume, failure handling."""

import json
import re
import shutil

import nbformat
import pandas as pd
import papermill
import pytest
from conftest import TINY_PHANTOM

from chexutils.cli.workbook import main
from chexutils.core import paths
from chexutils.core.errors import DataError
from chexutils.workbook import runner as workbook
from chexutils.workbook.report import write_report
from chexutils.workbook.runner import execute, load_config

pytestmark = pytest.mark.notebooks  # executes notebooks: make test-fast leaves these out


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
    parameters: &train
      train_csv: "{{output_dir}}/split/train.csv"
      select_csv: "{{output_dir}}/split/select.csv"
      train: {{image_size: 32, epochs: 1, batch_size: 16}}
  - notebook: 04_evaluate.ipynb
    per_run: true
    parameters: &evaluate {{held_out_csv: "{{output_dir}}/split/held_out.csv", n_resamples: 200}}
  # a second seed of each compared policy: 05 writes a mapping only from 2 seeds per arm
  - notebook: 03_train.ipynb
    runs: &second
      - {{name: U-Zeros-seed4, policy: U-Zeros, seed: 4}}
      - {{name: U-Ones-seed4, policy: U-Ones, seed: 4}}
    parameters: *train
  - notebook: 04_evaluate.ipynb
    runs: *second
    parameters: *evaluate
  - notebook: 05_compare.ipynb
    parameters: *evaluate
  # stage 2: train mixed on the mapping 05 just selected, evaluate it, compare again
  - notebook: 03_train.ipynb
    runs: &selected
      - name: mixed-selected
        policy: mixed
        policy_options: {{mapping: "{{output_dir}}/mixed_mapping.json"}}
    parameters: *train
  - notebook: 04_evaluate.ipynb
    runs: *selected
    parameters: *evaluate
  - notebook: 05_compare.ipynb
    parameters: *evaluate
  - notebook: 07_phantom_check.ipynb
    parameters: {{held_out_csv: "{{output_dir}}/split/held_out.csv", n_resamples: 200, selection: held-out truth}}
  - notebook: 08_look_inside.ipynb
    parameters: {{run_dir: "{{output_dir}}/U-Ones", max_images: 20, png_images: 2, n_resamples: 100}}
grid:
  policy: [U-Zeros, U-Ones, U-MultiClass]
"""


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    """Run notebooks 00-02 once through the runner's command line; return the sweep folder."""
    root = tmp_path_factory.mktemp("workbook")
    text = SERIES.format(
        data=root / "data",
        patients=TINY_PHANTOM["patients"],
        valid=TINY_PHANTOM["valid_patients"],
        w=TINY_PHANTOM["size"][0],
        h=TINY_PHANTOM["size"][1],
        seed=TINY_PHANTOM["seed"],
    )
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
    for part in ("train", "select", "held_out"):
        assert (out / "split" / f"{part}.csv").is_file()
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
        assert config["train_csv"] == str(out / "split" / "train.csv")
        assert len(pd.read_csv(run / "history.csv")) == 1
        assert (run / "best.pt").is_file() and (run / "learning_curves.png").stat().st_size > 1000
        assert (run / "03_train.ipynb").is_file()
    root = out.parent.parent  # the cache lives beside the data set, shared by every sweep on it
    caches = [p for p in (root / "data" / "cache").iterdir() if p.is_dir()]
    assert len(caches) == 4  # one per CSV (train, select, held_out, official valid)


def test_evaluate_writes_study_level_metrics_with_ci_and_curves(series):
    _, _, out = series
    for policy in ("U-Zeros", "U-Ones", "U-MultiClass"):
        run = out / policy
        metrics = json.loads((run / "metrics_official_valid.json").read_text())
        assert metrics["summary"]["eval_set"] == "official_valid" and metrics["summary"]["resampled"] == "patients"
        edema = metrics["observations"]["Edema"]
        assert edema["positives"] + edema["negatives"] == edema["n"] and edema["patients"] <= edema["n"]
        if edema["auroc"] is None:
            assert "one class" in edema["note"]
        elif edema["shown"] == "with CI":
            assert edema["ci_low"] <= edema["auroc"] <= edema["ci_high"]
        else:  # below the floor of 10 in the smaller class: no interval, and the note says why
            assert edema["ci_low"] is None and edema["note"].startswith("no CI:")
        predictions = pd.read_csv(run / "predictions_held_out.csv")
        assert predictions["Edema"].between(0, 1).all()
        assert (run / "metrics_held_out.json").is_file()
        for name in ("roc.png", "pr.png"):
            assert (run / name).stat().st_size > 10_000


def test_compare_writes_the_tables_mapping_and_report(series):
    _, _, out = series
    mapping = json.loads((out / "mixed_mapping.json").read_text())
    assert set(mapping.values()) <= {"U-Zeros", "U-Ones"} and len(mapping) == 14
    choice = pd.read_csv(out / "policy_choice.csv", index_col=0)
    assert (choice["criterion"] == "official-valid").all()
    for obs, row in choice.iterrows():  # the mapping follows the verdicts: default unless the adjusted test rejects
        assert mapping[obs] == ("U-Zeros" if not row["eligible"] or not row["p_holm"] < 0.05 else row["mapping"])
    comparison = (out / "comparison.md").read_text()
    for section in (
        "AUROC on the official valid set",
        "Ranking of the runs",
        "Per-label choice (official-valid)",
        "Selection criterion: **official-valid**",
        "Negative control: No Finding",
        "Negative control: seed-to-seed",
        "Agreement between selection criteria",
        "Ensemble of all runs",
    ):
        assert section in comparison, section
    for criterion in ("official-valid", "held-out-masked", "held-out-truth"):  # the tiny phantom has all three
        assert f"{criterion}: choice" in comparison
    edema = json.loads((out / "U-Ones" / "metrics_official_valid.json").read_text())["observations"]["Edema"]
    counts = f"[{edema['positives']}+ {edema['negatives']}−; {edema['patients']} pt]"
    assert counts in comparison  # every value with its counts, a CI only above the floor
    if edema["shown"] == "with CI":
        assert f"{edema['auroc']:.3f} ({edema['ci_low']:.3f}–{edema['ci_high']:.3f}) {counts}" in comparison
    else:
        assert edema["ci_low"] is None and f"({edema['ci_low']}" not in comparison
    assert (out / "figures" / "comparison.png").stat().st_size > 10_000
    assert (out / "ensemble-all" / "metrics_official_valid.json").is_file()
    assert "Per-label choice" in (out / "report.md").read_text()


def test_evaluate_writes_calibration_and_operating_points_and_a_static_browser_picture(series):
    _, _, out = series
    for policy in ("U-Zeros", "U-Ones", "U-MultiClass"):
        run = out / policy
        calibration = pd.read_csv(run / "calibration.csv")
        assert set(zip(calibration["set"], calibration["scaling"])) == {
            ("official valid", "none"),
            ("held-out", "none"),
            ("held-out", "temperature fitted on official valid"),
        }
        assert calibration["brier"].between(0, 1).all() and len(calibration) == 3 * 14
        points = pd.read_csv(run / "operating_points.csv")
        assert set(points["rule"]) == {"youden", "sensitivity≥0.9", "specificity≥0.9"} and len(points) == 3 * 14
        assert (points["chosen on"] == "official valid").all() and (points["reported on"] == "held-out").all()
        assert (run / "reliability.png").stat().st_size > 10_000
        executed = nbformat.read(run / "04_evaluate.ipynb", as_version=4)
        browser_cell = next(c for c in executed.cells if c.source.startswith("RocBrowser("))
        assert sum("image/png" in o.get("data", {}) for o in browser_cell.outputs) == 2  # plot and gallery
    beside = pd.read_csv(out / "calibration_comparison.csv", index_col=0)
    assert set(beside["policy"]) == {"U-Zeros", "U-Ones", "U-MultiClass", "mixed"}  # mixed: the second stage
    assert beside["mean ECE (5 tasks)"].between(0, 1).all()


def test_look_inside_scores_heatmaps_of_one_run_against_the_drawn_regions(series):
    _, _, sweep = series
    run = sweep / "U-Ones"
    scores = pd.read_csv(run / "localisation.csv")
    per_image = pd.read_csv(run / "localisation_images.csv")
    assert {"observation", "kind", "n", "iou", "iou_lo", "iou_hi", "hit_rate", "hit_lo", "hit_hi", "chance"} <= set(
        scores
    )
    assert per_image["Path"].nunique() <= 20 and scores["n"].sum() == len(per_image) > 0
    assert set(scores["kind"]) <= {"clear", "faint", "mimic"}
    assert (run / "heatmap_gallery.png").stat().st_size > 0
    pngs = pd.read_csv(run / "heatmaps" / "heatmaps.csv")
    assert len(pngs) == 2 * 14 and all((run / "heatmaps" / p.split("/")[-1]).is_file() for p in pngs["png"])
    assert not (sweep / "U-Zeros" / "localisation.csv").exists()  # one run only


def test_second_run_skips_unchanged_steps(series):
    _, config, out = series
    outcomes = execute(load_config(config, out.parent), log=lambda *_: None)
    # 00-02, 03 and 04 for 3 runs, 03 and 04 for the 2 second seeds, 05, stage 2 (03, 04, 05), 07, 08
    assert len(outcomes) == 19 and [o.status for o in outcomes] == ["skipped"] * 19


def test_second_stage_trains_mixed_on_the_mapping_05_selected_and_compares_it(series):
    _, _, out = series
    mapping = json.loads((out / "mixed_mapping.json").read_text())
    config = json.loads((out / "mixed-selected" / "config.json").read_text())
    assert config["policy"] == "mixed" and config["policy_options"] == {"mapping": mapping}
    assert config["policy_resolved"]["mapping"] == mapping
    assert (out / "mixed-selected" / "metrics_official_valid.json").is_file()
    assert (out / "notebooks" / "05_compare.ipynb").is_file() and (out / "notebooks" / "05_compare-2.ipynb").is_file()
    # beside the single-policy runs; its mapping was chosen on official valid, so its figures there are marked
    assert "| mixed-selected (chose it; not an estimate) |" in (out / "comparison.md").read_text()
    assert not (out / "U-Zeros" / "05_compare.ipynb").exists() and not (out / "mixed-selected_U-Zeros").exists()


def test_compare_on_a_grid_without_u_ones_skips_the_choice_with_a_note(series, tmp_path):
    root, _, out = series
    sweep = tmp_path / "one-sided"
    shutil.copytree(
        out, sweep, ignore=shutil.ignore_patterns("U-Ones", "U-Ones-seed4", "mixed-selected", "ensemble-all", "*.ipynb")
    )
    papermill.execute_notebook(
        str(paths.NOTEBOOK_DIR / "05_compare.ipynb"),
        str(tmp_path / "05.ipynb"),
        progress_bar=False,
        parameters={
            "data_dir": str(root / "data"),
            "output_dir": str(sweep),
            "held_out_csv": str(sweep / "split" / "held_out.csv"),
            "n_resamples": 100,
        },
    )
    comparison = (sweep / "comparison.md").read_text()
    assert "Per-label choice skipped: the grid has no U-Ones run (policies here: U-MultiClass, U-Zeros)" in comparison
    assert "| U-Zeros |" in comparison and "Negative control" not in comparison  # the rest of 05 still ran
    assert not (sweep / "mixed_mapping.json").exists() and not (sweep / "policy_choice.csv").exists()


def test_phantom_check_states_the_controls_and_the_agreement_in_the_report(series):
    _, _, out = series
    checks = json.loads((out / "phantom_check.json").read_text())
    # the hand-set phantom over the family of learners has no positive control (docs/statistics.md)
    assert checks["selection set"] == "held-out truth" and checks["positive control"] is None
    assert checks["null controls"] == ["No Finding", "Support Devices"]
    agreement = checks["agreement certain labels vs truth (held-out, signs)"]
    if agreement["of"]:
        assert 0 <= agreement["ci_low"] <= agreement["rate"] <= agreement["ci_high"] <= 1
    report = (out / "report.md").read_text()
    assert "Phantom check: does the comparison recover the known answer?" in report
    assert "NOT CHECKABLE: positive control — this phantom has none" in report
    assert re.search(r"(PASS|FAIL|NOT CHECKABLE): null controls No Finding, Support Devices", report)


def test_a_changed_input_file_reruns_the_steps_that_read_it(series, tmp_path):
    _, config_path, out = series
    config = load_config(config_path, out.parent)
    stage2 = config.steps[8]
    run = stage2.runs[0]
    before = workbook._input_files_digest(workbook.step_parameters(config, stage2, run))
    mapping = out / "mixed_mapping.json"
    original = mapping.read_text()
    try:
        flipped = {k: "U-Zeros" if v == "U-Ones" else "U-Ones" for k, v in json.loads(original).items()}
        mapping.write_text(json.dumps(flipped))
        assert workbook._input_files_digest(workbook.step_parameters(config, stage2, run)) != before
    finally:
        mapping.write_text(original)
    assert workbook._input_files_digest(workbook.step_parameters(config, stage2, run)) == before


def test_failing_notebook_is_kept_with_its_error_and_stops_the_series(tmp_path):
    config = load_config(
        _config(
            tmp_path,
            """
name: broken
parameters: {data_dir: nowhere, phantom: false}
steps: [{notebook: 00_data.ipynb}, {notebook: 01_explore.ipynb}]
""",
        ),
        tmp_path / "out",
    )
    outcomes = execute(config, log=lambda *_: None)
    assert [o.status for o in outcomes] == ["failed"]
    assert "DataError" in outcomes[0].error and "nowhere" in outcomes[0].error
    executed = nbformat.read(outcomes[0].output, as_version=4)
    assert any(out.get("ename") == "DataError" for c in executed.cells for out in c.get("outputs", []))
    report = write_report(config, outcomes)
    assert "failed" in report.read_text()
    assert main(["run", str(config.path), "--output-root", str(tmp_path / "out")]) == 1


def test_grid_runs_per_run_steps_once_per_point(tmp_path):
    config = load_config(
        _config(
            tmp_path,
            """
name: grid
parameters: {data_dir: nowhere}
steps: [{notebook: 01_explore.ipynb, per_run: true}]
grid: {seed: [1, 2]}
""",
        ),
        tmp_path / "out",
    )
    assert [name for name, _ in config.runs()] == ["seed1", "seed2"]
    params = workbook.step_parameters(config, config.steps[0], config.runs()[1])
    assert params["seed"] == 2 and params["output_dir"] == str(tmp_path / "out" / "grid")
    outcomes = execute(config, log=lambda *_: None)  # both runs fail (no data) but both are tried
    assert [(o.run, o.status) for o in outcomes] == [("seed1", "failed"), ("seed2", "failed")]
    assert (tmp_path / "out" / "grid" / "seed2" / "01_explore.ipynb").is_file()


def test_seeds_are_a_grid_axis_named_in_the_run(tmp_path):
    config = load_config(
        _config(
            tmp_path,
            """
name: seeds
parameters: {data_dir: nowhere}
steps: [{notebook: 03_train.ipynb, per_run: true}]
grid: {policy: [U-Zeros, U-Ones], seed: [0, 1]}
""",
        ),
        tmp_path / "out",
    )
    assert [name for name, _ in config.runs()] == ["U-Zeros_seed0", "U-Zeros_seed1", "U-Ones_seed0", "U-Ones_seed1"]
    params = workbook.step_parameters(config, config.steps[0], config.runs()[3])
    assert (params["policy"], params["seed"], params["run_name"]) == ("U-Ones", 1, "U-Ones_seed1")
    assert params["run_dir"] == str(tmp_path / "out" / "seeds" / "U-Ones_seed1")


def test_a_step_with_its_own_runs_replaces_the_grid_for_that_step(tmp_path):
    config = load_config(
        _config(
            tmp_path,
            """
name: stages
parameters: {data_dir: nowhere}
steps:
  - {notebook: 01_explore.ipynb, per_run: true}
  - notebook: 01_explore.ipynb
    runs: [{name: second, seed: 7}, {name: third, seed: 8}]
grid: {seed: [1]}
""",
        ),
        tmp_path / "out",
    )
    first, second = config.steps
    assert (first.key, second.key, second.per_run) == ("01_explore", "01_explore-2", True)
    assert second.runs == [("second", {"seed": 7}), ("third", {"seed": 8})]
    assert workbook.step_parameters(config, second, second.runs[1])["seed"] == 8
    outcomes = execute(config, log=lambda *_: None)
    assert [o.run for o in outcomes] == ["seed1", "second", "third"]
    assert (tmp_path / "out" / "stages" / "third" / "01_explore-2.ipynb").is_file()


@pytest.mark.parametrize(
    "text, pattern",
    [
        (
            "name: x\nsteps: [{notebook: 00_data.ipynb}]\nparameters: {data_dri: data}\n",
            "data_dri, which no step's notebook declares",
        ),
        ("name: x\nsteps: [{notebook: 99_missing.ipynb}]\n", "99_missing.ipynb"),
        ("name: x\nstep: []\n", "unknown key"),
        ("steps: [{notebook: 00_data.ipynb}]\n", "'name'"),
        ("name: x\nsteps: []\n", "at least one notebook"),
        ("name: x\nsteps: [{notebook: 00_data.ipynb}]\ngrid: {seed: 3}\n", "non-empty list"),
        ("name: x\nsteps: [\n  {notebook: 00_data.ipynb\n", r"line \d+: not valid YAML"),
        ("name: x\nsteps: [{notebook: 03_train.ipynb, runs: []}]\n", r"steps\[0\].runs must be a non-empty list"),
        (
            "name: x\nsteps: [{notebook: 03_train.ipynb, runs: [{policy: mixed}]}]\n",
            r"steps\[0\].runs\[0\] needs a 'name'",
        ),
        ("name: x\nsteps: [{notebook: 03_train.ipynb, runs: [{name: a}, {name: a}]}]\n", r"runs\[1\] needs a 'name'"),
        (
            "name: x\nsteps: [{notebook: 03_train.ipynb, runs: [{name: a, polcy: mixed}]}]\n",
            r"steps\[0\].runs\[0\] has polcy, which no step's notebook declares",
        ),
    ],
)
def test_bad_config_is_a_data_error_naming_the_file(tmp_path, text, pattern):
    path = _config(tmp_path, text)
    with pytest.raises(DataError, match=pattern) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_cli_reports_config_errors_with_exit_code_2(tmp_path, capsys):
    assert main(["run", str(tmp_path / "missing.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err


def _tiny_notebook(path, body: str):
    cells = [nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]}), nbformat.v4.new_code_cell(body)]
    nbformat.write(
        nbformat.v4.new_notebook(
            cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
        ),
        path,
    )


def test_rerun_executes_exactly_the_changed_steps_and_everything_under_force(tmp_path, monkeypatch):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    for name in ("a", "b", "c"):
        _tiny_notebook(notebooks / f"{name}.ipynb", f"print({name!r}, x)")
    monkeypatch.setattr(workbook.paths, "NOTEBOOK_DIR", notebooks)
    workbook._declared.cache_clear()
    text = (
        "name: digest\nsteps:\n  - {notebook: a.ipynb, parameters: {x: 1}}\n  - {notebook: b.ipynb}\n"
        "  - {notebook: c.ipynb, parameters: {x: 3}}\n"
    )
    path = _config(tmp_path, text)
    run = lambda force=False: [
        o.status for o in execute(load_config(path, tmp_path / "out"), force, log=lambda *_: None)
    ]
    assert run() == ["ok", "ok", "ok"]
    assert run() == ["skipped"] * 3
    path.write_text(text.replace("{x: 3}", "{x: 4}"))  # a parameter of c
    assert run() == ["skipped", "skipped", "ok"]
    _tiny_notebook(notebooks / "b.ipynb", "print('b changed', x)")  # the notebook b
    assert run() == ["skipped", "ok", "skipped"]
    assert run(force=True) == ["ok", "ok", "ok"]
    workbook._declared.cache_clear()


@pytest.mark.parametrize("name", ["demo", "phantom-study"])
def test_shipped_phantom_configs_train_two_seeds_and_close_the_loop(name):
    config = load_config(workbook.paths.CONFIG_DIR / f"{name}.yaml")
    runs = config.runs()
    for policy in ("U-Zeros", "U-Ones"):
        assert len({values["seed"] for _, values in runs if values["policy"] == policy}) >= 2, policy
    stage2 = [s for s in config.steps if s.runs is not None]
    assert [s.key for s in stage2] == ["03_train-2", "04_evaluate-2"]
    ((run_name, values),) = stage2[0].runs
    params = workbook.step_parameters(config, stage2[0], (run_name, values))
    assert params["policy"] == "mixed"
    assert params["policy_options"] == {"mapping": str(config.output_dir / "mixed_mapping.json")}
    after = [s.key for s in config.steps[config.steps.index(stage2[-1]) + 1 :]]
    assert after[0] == "05_compare-2"  # the selected-mixed model is compared beside the single-policy runs
