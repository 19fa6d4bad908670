"""The demo's headline figures and the recorded spread they are judged against (issue 22): the prediction
interval report.md prints is checked by a seeded simulation through the printing function itself, against a
Monte Carlo computation of the same interval written here; the README's figures are the spread file's."""

import json
import math
import re

import numpy as np
import pandas as pd
import pytest

from chexutils.cli.workbook import main
from chexutils.core import paths
from chexutils.core.errors import DataError
from chexutils.core.rundir import OFFICIAL_TEST, OFFICIAL_VALID, RunDir
from chexutils.evaluation.official_test import ENSEMBLE
from chexutils.scoring.metrics import write_metrics
from chexutils.workbook import headline
from chexutils.workbook.runner import Outcome

FIGURE = "official valid mean AUROC, U-Ones (mean of its runs)"


def _spread(values, name=FIGURE) -> dict:
    """A spread as make_spread builds it, from one headline dict per repeat (no files)."""
    return headline.spread_of([(f"demo-seed{i}", {"figures": {name: v}, "machine": "m"}) for i, v in enumerate(values)])


def _verdict(value, spread, name=FIGURE) -> str:
    """The 'inside' cell report.md prints for ``value``."""
    [row] = [line for line in headline.spread_lines({name: value}, spread) if line.startswith(f"| {name} ")]
    return row.split("|")[5].strip()  # | figure | this run | interval | range | inside |


@pytest.mark.parametrize("n", [3, 5])
def test_printed_verdicts_cover_one_more_run_95_percent_of_the_time(n):
    # the coverage of the printed verdict, simulated through spread_lines (seeded: the same draws every run)
    rng = np.random.default_rng(n)
    reps = 2000
    inside = 0
    for _ in range(reps):
        draws = rng.normal(0.65, 0.02, n + 1)
        inside += _verdict(float(draws[-1]), _spread(draws[:-1].tolist())) == "yes"
    assert abs(inside / reps - 0.95) < 0.015, inside / reps  # 0.015 = 3 SE of a 95% proportion over 2000


@pytest.mark.parametrize("n", [3, 4, 7])
def test_interval_half_width_matches_a_monte_carlo_of_the_pivot(n):
    # independent computation: the 97.5% quantile of |new − mean| / (SD · √(1 + 1/n)) over simulated normal samples
    rng = np.random.default_rng(100 + n)
    x = rng.normal(size=(200_000, n + 1))
    pivot = np.abs(x[:, -1] - x[:, :-1].mean(axis=1)) / (x[:, :-1].std(axis=1, ddof=1) * math.sqrt(1 + 1 / n))
    quantile = np.quantile(pivot, 0.95)
    values = [0.61, 0.64, 0.66, 0.70, 0.62, 0.68, 0.65][:n]
    low, high = headline.prediction_interval(values)
    sd = np.std(values, ddof=1)
    assert (high - low) / 2 / (sd * math.sqrt(1 + 1 / n)) == pytest.approx(quantile, rel=0.03)
    assert (low + high) / 2 == pytest.approx(np.mean(values), abs=1e-12)
    # and report.md prints exactly that interval, to three decimals
    row = next(line for line in headline.spread_lines({FIGURE: 0.5}, _spread(values)) if FIGURE in line)
    assert f"{low:.3f} to {high:.3f}" in row


def test_verdict_on_both_sides_of_the_interval_and_below_three_repeats():
    spread = _spread([0.60, 0.62, 0.64, 0.66])
    low, high = spread["figures"][FIGURE]["interval"]
    assert _verdict(low + 1e-9, spread) == "yes" and _verdict(high - 1e-9, spread) == "yes"
    assert _verdict(low - 1e-6, spread) == "**no**" and _verdict(high + 1e-6, spread) == "**no**"
    assert headline.prediction_interval([0.6, 0.7]) is None
    assert _verdict(0.65, _spread([0.6, 0.7])) == ""  # no interval from two repeats: no verdict either
    summary = headline.spread_summary({FIGURE: high + 0.01, "unrecorded": 1.0}, spread, "x.spread.json")
    assert summary.startswith("0 of 1 headline figures inside") and f"outside: {FIGURE}" in summary


def _run(sweep, name, policy, mean, eval_set=OFFICIAL_VALID):
    run = RunDir(sweep / name)
    run.path.mkdir(parents=True, exist_ok=True)
    run.config_file.write_text(json.dumps({"policy": policy, "backbone": "densenet121", "image_size": 64, "seed": 0}))
    run.best.write_bytes(b"checkpoint")
    summary = {"mean_auroc_tasks": {"mean": mean, "ci_low": None, "ci_high": None}}
    write_metrics(pd.DataFrame(), summary, run.metrics(eval_set))


def _sweep(root, shift=0.0):
    _run(root, "U-Zeros_densenet121_seed0", "U-Zeros", 0.60 + shift)
    _run(root, "U-Zeros_densenet121_seed1", "U-Zeros", 0.64 + shift)
    _run(root, "U-Ones_densenet121_seed0", "U-Ones", 0.70 + shift)
    _run(root, "mixed-selected", "mixed", 0.66 + shift)  # its mapping chosen on the official valid set
    (root / ENSEMBLE).mkdir()
    write_metrics(pd.DataFrame(), {"mean_auroc_tasks": {"mean": 0.8}}, RunDir(root / ENSEMBLE).metrics(OFFICIAL_TEST))
    return root


def test_headline_figures_are_each_arms_mean_the_ensemble_and_the_seconds_of_a_full_run(tmp_path):
    sweep = _sweep(tmp_path / "demo")
    ok = [Outcome("00_data", None, "ok", 2.5, sweep), Outcome("03_train", "a", "ok", 10.0, sweep)]
    figures = headline.headline_figures(sweep, ok, seconds=9.5)
    assert figures == {
        "official valid mean AUROC, U-Ones (mean of its runs)": pytest.approx(0.70),
        "official valid mean AUROC, U-Zeros (mean of its runs)": pytest.approx(0.62),
        "official valid mean AUROC, mixed (mean of its runs; chose it; not an estimate)": pytest.approx(0.66),
        f"official test mean AUROC, {ENSEMBLE}": pytest.approx(0.8),
        headline.SECONDS: 9.5,  # the wall clock (steps of parallel runs overlap), not the steps' sum
    }
    assert headline.SECONDS not in headline.headline_figures(sweep, ok)  # no wall-clock time given
    skipped = [*ok, Outcome("04_evaluate", "a", "skipped", 0.0, sweep)]
    assert headline.SECONDS not in headline.headline_figures(
        sweep, skipped, seconds=9.5
    )  # a resumed run's time is not comparable


def test_spread_command_records_the_sweeps_and_refuses_a_file_it_did_not_make(tmp_path, capsys):
    sweeps = []
    for i, shift in enumerate([0.0, 0.01, -0.01]):
        sweep = _sweep(tmp_path / f"demo-seed{i}", shift)
        headline.write_headline(sweep, headline.headline_figures(sweep))
        sweeps.append(str(sweep))
    out = tmp_path / "demo.spread.json"
    assert main(["spread", str(out), *sweeps]) == 0
    spread = json.loads(out.read_text())
    assert spread["sweeps"] == ["demo-seed0", "demo-seed1", "demo-seed2"]
    assert spread["figures"][FIGURE]["values"] == pytest.approx([0.70, 0.71, 0.69])
    assert (
        "- official valid mean AUROC, U-Ones (mean of its runs): 0.690 to 0.710" in capsys.readouterr().out
    )  # the README's line, printed
    assert main(["spread", str(out), *sweeps]) == 0  # its own file: replaced
    foreign = tmp_path / "notes.json"
    foreign.write_text('{"mine": 1}')
    assert main(["spread", str(foreign), *sweeps]) == 2 and json.loads(foreign.read_text()) == {"mine": 1}
    assert re.match(r"error: .*notes\.json: exists and was not written by", capsys.readouterr().err)
    assert main(["spread", str(tmp_path / "new.json"), str(tmp_path)]) == 2  # a folder without headline.json
    with pytest.raises(DataError, match="headline.json"):
        headline.make_spread([tmp_path])


def test_the_readme_gives_the_demo_figures_of_the_recorded_spread():
    spread = headline.read_spread(paths.CONFIG_DIR / "demo.yaml")
    assert spread is not None and spread["made_by"] == headline.MADE_BY
    assert len(spread["sweeps"]) >= 4  # several seeded repeats
    for recorded in spread["figures"].values():
        assert recorded["range"] == [min(recorded["values"]), max(recorded["values"])]
        assert recorded["interval"] == pytest.approx(list(headline.prediction_interval(recorded["values"])))
    readme = (paths.PROJECT_ROOT / "README.md").read_text()
    for line in headline.readme_lines(spread):
        assert line in readme


@pytest.mark.parametrize("text", ['{"sweeps": [', '{"made_by": "someone"}', "[1, 2]"])
def test_a_broken_spread_file_is_one_error_line_naming_it(tmp_path, capsys, text):
    config = tmp_path / "tiny.yaml"
    config.write_text("name: tiny\nsteps:\n  - notebook: 00_data.ipynb\n")
    headline.spread_path(config).write_text(text)
    with pytest.raises(DataError, match=r"tiny\.spread\.json.*expected a spread file"):
        headline.read_spread(config)
    assert main(["run", str(config), "--output-root", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "tiny.spread.json" in err[0]
    assert not (tmp_path / "out" / "tiny" / "notebooks").exists()  # refused before any step ran
