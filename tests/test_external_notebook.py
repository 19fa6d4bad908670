"""Notebook 10 runs headless on two small phantom sites and writes what docs/external.md names."""

import json

import papermill
import pytest

from chexutils.core import paths

pytestmark = pytest.mark.notebooks  # executes a notebook: make test-fast leaves it out


def test_notebook_10_runs_on_two_small_phantom_sites(tmp_path):
    site1, out = tmp_path / "site1", tmp_path / "out"
    papermill.execute_notebook(
        str(paths.NOTEBOOK_DIR / "10_external.ipynb"),
        str(tmp_path / "10.ipynb"),
        progress_bar=False,
        parameters={
            "data_dir": str(site1),
            "site2_root": str(site1 / "mimic-cxr-jpg"),
            "phantom_patients": 150,
            "phantom_valid_patients": 150,
            "site2_patients": 150,
            "site2_test_patients": 150,
            "seeds": [0, 1],
            "output_dir": str(out),
        },
    )
    tables = out / "external"
    for name in ("cross_site.csv", "paired_drops.csv", "policy_agreement.csv", "subgroups.csv", "underdiagnosis.csv"):
        assert (tables / name).is_file(), name
    assert (tables / "cross_site.png").is_file() and (tables / "forest_site2_age.png").is_file()
    summary = json.loads((tables / "external_summary.json").read_text())
    grid = summary["grid"]  # evaluated at (rows) x trained on (columns): mean AUROC
    assert set(grid) == {"site 1", "site 2"} and set(grid["site 2"]) == {"site 1", "site 2", "pooled"}
    # shift 1: the site-1 model loses at site 2 what site 2's own model keeps (the known answer's direction)
    assert grid["site 1"]["site 1"] > grid["site 2"]["site 1"]
    assert summary["shift"] == 1.0 and "compared at every site" in summary["policy agreement"]
