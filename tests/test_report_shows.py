"""report.md opens with "What this sweep shows" (issue 22), built from the files the steps write; checked on a
hand-made sweep folder (the files written here in the steps' own formats), not on a full demo."""

import json

import pandas as pd
import pytest

from chexutils.core import paths
from chexutils.core.io import write_table
from chexutils.evaluation import compare, official_test, paired_ranking
from chexutils.explain.localise import SCORE_COLUMNS
from chexutils.workbook import runner as workbook
from chexutils.workbook.report import write_report

RUNS = ["U-Zeros_densenet121_seed0", "U-Zeros_densenet121_seed1", "U-Ones_densenet121_seed0"]
RUNS += ["U-Ones_densenet121_seed1", "mixed-selected"]
REPORTED = "U-Ones_densenet121_seed0"


def _pairs(p_holm: float) -> pd.DataFrame:
    pairs = pd.DataFrame(
        [
            {
                "a": "U-Zeros",
                "b": "U-Ones",
                "mean a": 0.61,
                "mean b": 0.66,
                "delta": 0.05,
                "p_holm": p_holm,
                "seeds": "2+2",
            }
        ]
    )
    pairs.attrs["tasks"] = ["Atelectasis", "Edema"]
    return pairs


def _sweep(tmp_path, p_holm: float, positive_recovered: bool):
    config = workbook.load_config(paths.CONFIG_DIR / "demo.yaml", tmp_path / "out")
    sweep = config.output_dir
    (sweep / "figures").mkdir(parents=True)
    auroc = pd.DataFrame({"Atelectasis": [0.6] * 5, "Edema": [0.7] * 5}, index=pd.Index(RUNS, name="run"))
    compare.write_comparison(
        sweep,
        {
            "AUROC on the official valid set (95% CI) [positives+ negatives−; patients], study level": auroc,
            "Ranking of the runs": paired_ranking.ranking_text(_pairs(p_holm), 0.05, "arms of runs"),
            "Negative control: No Finding": "No Finding control (identical targets under both policies): "
            "Δ = +0.001 — not flagged, as it should be.",
        },
    )
    (sweep / "phantom_check.json").write_text(
        json.dumps(
            {
                "positive control": "Atelectasis",
                "positive control recovered": positive_recovered,
                "null controls": ["Edema"],
                "null controls flagged": [],
                "null controls not flagged": True,
            }
        )
    )
    official_test.write_markdown(
        sweep,
        {
            f"Reported model: {REPORTED} (chosen on the official valid set) beside the benchmark radiologists": (
                pd.DataFrame({"AUROC": [0.7]}, index=["Edema"])
            )
        },
    )
    run = sweep / REPORTED
    (run / "heatmaps").mkdir(parents=True)
    scores = pd.DataFrame([["Edema", "sign", 12, 0.31, 0.25, 0.37, 0.58, 0.4, 0.74, 0.12]], columns=SCORE_COLUMNS)
    write_table(scores, run / "localisation.csv", index=False)
    for png in (sweep / "figures" / "comparison.png", run / "roc.png", run / "heatmaps" / "a.png"):
        png.write_bytes(b"png")
    (run / "heatmaps" / "b.png").write_bytes(b"png")
    return config


def _shows(config) -> str:
    text = write_report(config, []).read_text()
    assert text.index("## What this sweep shows") < text.index("## What was run")
    return text.split("## What this sweep shows")[1].split("## What was run")[0], text


def test_the_report_opens_with_what_the_sweep_shows_from_the_steps_files(tmp_path):
    shows, text = _shows(_sweep(tmp_path, p_holm=0.4, positive_recovered=False))
    assert "**Runs:** 5 compared" in shows and "mixed-selected" in shows  # the AUROC table's rows
    assert "**Runs:** 5: 4 from the grid" in text.split("## What was run")[1]  # both counts agree
    assert "320 train + 100 valid + 150 official test patients" in shows
    assert "**Ranking:** none" in shows and " > " not in shows  # the test ranks nothing: no ranking
    assert "positive control Atelectasis not recovered" in shows and "not detectable here" in shows
    assert "null control" not in shows.split("Controls that failed")[1]  # only failed controls named
    assert f"**Reported model:** {REPORTED} (chosen on the official valid set), reported on the official test" in shows
    assert "Localisation" in shows and "0.31 (0.25-0.37)" in shows  # notebook 08's scores
    figures = text.split("## Figures")[1]
    assert "[2 Grad-CAM heatmaps](U-Ones_densenet121_seed0/heatmaps/)" in figures
    assert "heatmaps/a.png" not in figures and "[comparison](figures/comparison.png)" in figures


@pytest.mark.parametrize("p_holm", [0.01])
def test_a_ranking_appears_only_where_the_paired_test_says_so(tmp_path, p_holm):
    shows, _ = _shows(_sweep(tmp_path, p_holm=p_holm, positive_recovered=True))
    assert "**Ranking:** U-Ones > U-Zeros (Δ 0.050, Holm p 0.01) (paired, seed-aware test, Holm);" in shows
    assert "Controls that failed" not in shows and "positive and null controls passed" in shows
