"""A tiny policy x loss sweep through the runner: run names carry the loss only off its default, and 05
makes the per-label choice within each loss, sets the verdicts side by side and ranks within groups."""

import json

import pandas as pd
import pytest
from conftest import TINY_PHANTOM

from chexutils.cli.workbook import main

pytestmark = pytest.mark.notebooks  # executes notebooks: make test-fast leaves these out

SWEEP = """
name: tiny-loss
parameters:
  data_dir: {data}
  phantom: true
  phantom_patients: {patients}
  phantom_valid_patients: {valid}
  phantom_size: [{w}, {h}]
  seed: {seed}
steps:
  - notebook: 00_data.ipynb
  - notebook: 02_split.ipynb
  - notebook: 03_train.ipynb
    per_run: true
    parameters:
      train_csv: "{{output_dir}}/split/train.csv"
      select_csv: "{{output_dir}}/split/select.csv"
      train: {{image_size: 32, epochs: 1, batch_size: 16, max_steps_per_epoch: 3, auc_lr: 0.05}}
  - notebook: 04_evaluate.ipynb
    per_run: true
    parameters: &evaluate {{held_out_csv: "{{output_dir}}/split/held_out.csv", n_resamples: 100}}
  - notebook: 05_compare.ipynb
    parameters: *evaluate
grid:
  policy: [U-Zeros, U-Ones]
  loss: [bce, auc-margin]
"""


def test_a_policy_by_loss_sweep_compares_the_policies_within_each_loss(tmp_path):
    text = SWEEP.format(
        data=tmp_path / "data",
        patients=TINY_PHANTOM["patients"],
        valid=TINY_PHANTOM["valid_patients"],
        w=TINY_PHANTOM["size"][0],
        h=TINY_PHANTOM["size"][1],
        seed=TINY_PHANTOM["seed"],
    )
    config = tmp_path / "sweep.yaml"
    config.write_text(text)
    assert main(["run", str(config), "--output-root", str(tmp_path / "out")]) == 0
    out = tmp_path / "out" / "tiny-loss"
    runs = sorted(p.name for p in out.iterdir() if (p / "best.pt").is_file())
    assert runs == ["U-Ones", "U-Ones_auc-margin", "U-Zeros", "U-Zeros_auc-margin"]
    record = json.loads((out / "U-Ones_auc-margin" / "config.json").read_text())
    assert record["loss"] == "auc-margin" and record["auc_lr"] == 0.05
    assert pd.read_csv(out / "U-Ones_auc-margin" / "history.csv")["lr"].tolist() == [0.05]
    comparison = (out / "comparison.md").read_text()
    assert "Per-label choice under each recipe (does the better policy change with the loss?)" in comparison
    assert "Ranking of the policies within bce" in comparison
    assert "Ranking of the policies within auc-margin" in comparison
    assert "Ranking of the recipes within U-Ones" in comparison
    assert "verdict changes" in comparison
    choice = pd.read_csv(out / "policy_choice.csv", index_col=0)  # the bce recipe's choice feeds mixed
    assert len(choice) == 14
