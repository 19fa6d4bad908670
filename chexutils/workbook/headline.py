"""A sweep's headline figures (``headline.json``) and whether they fall inside a config's recorded spread.

The figures a researcher compares first after a run: per arm (policy and recipe), the mean over its runs
of the 5-task mean AUROC on the official valid set; the ensemble of all runs on the official test set; and
the wall-clock seconds of a run that executed every step. They move with the seeds and the machine, so "is my result right?" needs a
reference: a config may carry a recorded spread beside it (``configs/demo.yaml`` ->
``configs/demo.spread.json``), made from several seeded repeats by

    python -m chexutils workbook spread configs/demo.spread.json output/demo-seed0 output/demo-seed1 ...

It holds, per figure, the values measured, their range and a 95% prediction interval for one more run
(mean ± t(0.975, n−1) · SD · √(1 + 1/n), the interval a new draw from the same normal distribution falls
in 95% of the time; tests/test_headline.py checks its coverage by simulation). The runner writes
``headline.json`` after every ``workbook run`` and report.md says, figure by figure, whether this run falls
inside the interval ("outside" on another machine's seconds is expected: they were measured on one box).
"""

import json
import math
import os
import platform
from pathlib import Path

import numpy as np
from scipy import stats

from chexutils.core.errors import DataError
from chexutils.core.io import write_json
from chexutils.core.rundir import OFFICIAL_TEST, OFFICIAL_VALID, RunDir
from chexutils.evaluation.compare import CHOSE_IT, DEFAULT_RECIPE, chosen_on, run_table
from chexutils.evaluation.official_test import ENSEMBLE

HEADLINE_JSON = "headline.json"  # in the sweep folder, written by the runner with report.md
MADE_BY = "python -m chexutils workbook spread"  # the mark of a spread file this command may replace
LEVEL = 0.95
SECONDS = "seconds, wall clock, every step executed"


def spread_path(config_path) -> Path:
    """Where a config's recorded spread lives: beside it, ``<name>.spread.json``."""
    config_path = Path(config_path)
    return config_path.with_name(config_path.stem + ".spread.json")


def _task_mean(metrics_json: Path) -> float | None:
    if not metrics_json.is_file():
        return None
    mean = json.loads(metrics_json.read_text())["summary"].get("mean_auroc_tasks") or {}
    return None if mean.get("mean") is None else float(mean["mean"])


def headline_figures(sweep_dir, outcomes=(), seconds: float | None = None) -> dict[str, float]:
    """The sweep's headline figures, name -> value (figures a sweep did not produce are left out).

    ``outcomes``: the runner's step outcomes, ``seconds`` its wall-clock time; the time is a figure only when
    every step executed (a rerun that skipped finished steps took less time for a reason that is not the machine).
    """
    sweep_dir = Path(sweep_dir)
    figures: dict[str, float] = {}
    runs = run_table(sweep_dir)
    arms: dict[str, list[float]] = {}
    for _, row in runs.iterrows():
        value = _task_mean(RunDir(row["path"]).metrics(OFFICIAL_VALID))
        if value is None:
            continue
        arm = str(row["policy"]) + ("" if row["recipe"] == DEFAULT_RECIPE else f" {row['recipe']}")
        chose = chosen_on(row["path"], row["policy"]) == OFFICIAL_VALID
        arms.setdefault(f"{arm} (mean of its runs{'; ' + CHOSE_IT if chose else ''})", []).append(value)
    for arm, values in sorted(arms.items()):
        figures[f"official valid mean AUROC, {arm}"] = float(np.mean(values))
    ensemble = _task_mean(RunDir(sweep_dir / ENSEMBLE).metrics(OFFICIAL_TEST))
    if ensemble is not None:
        figures[f"official test mean AUROC, {ENSEMBLE}"] = ensemble
    outcomes = list(outcomes)
    if seconds is not None and outcomes and all(o.status == "ok" for o in outcomes):
        figures[SECONDS] = float(seconds)
    return figures


def write_headline(sweep_dir, figures: dict[str, float]) -> Path:
    """``<sweep>/headline.json``: the figures (``headline_figures``) and where they were measured."""
    return write_json(Path(sweep_dir) / HEADLINE_JSON, {"figures": figures, "machine": machine()})


def machine() -> str:
    """A short description of where figures were measured: cores, processor model (Linux), system."""
    cpuinfo = Path("/proc/cpuinfo")
    model = platform.machine()
    if cpuinfo.is_file():
        names = [
            line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")
        ]
        model = names[0] if names else model
    return f"{os.cpu_count()} cores, {model}, {platform.system()}"


def prediction_interval(values, level: float = LEVEL) -> tuple[float, float] | None:
    """The ``level`` prediction interval for one more draw, from ``values`` (None below 3 values).

    mean ± t(1 − (1 − level) / 2, n − 1) · SD · √(1 + 1/n): under a normal model of the repeats, a new
    run's figure falls inside with probability ``level``.
    """
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], float)
    if len(x) < 3:
        return None
    half = stats.t.ppf(1 - (1 - level) / 2, len(x) - 1) * x.std(ddof=1) * math.sqrt(1 + 1 / len(x))
    return float(x.mean() - half), float(x.mean() + half)


def make_spread(sweep_dirs) -> dict:
    """The recorded spread of the sweeps' headline.json files (``spread_of``)."""
    runs = []
    for sweep in map(Path, sweep_dirs):
        path = sweep / HEADLINE_JSON
        if not path.is_file():
            raise DataError(f"{path}: no headline figures; expected a finished sweep (`workbook run` writes them)")
        runs.append((sweep.name, json.loads(path.read_text())))
    return spread_of(runs)


def spread_of(runs: list[tuple[str, dict]]) -> dict:
    """(sweep name, headline dict) pairs -> per figure the values, their range and the prediction interval."""
    names = sorted({name for _, run in runs for name in run["figures"]})
    figures = {}
    for name in names:
        values = [run["figures"][name] for _, run in runs if name in run["figures"]]
        interval = prediction_interval(values)
        figures[name] = {
            "values": values,
            "range": [min(values), max(values)],
            "interval": list(interval) if interval else None,
        }
    return {
        "made_by": MADE_BY,
        "level": LEVEL,
        "sweeps": [name for name, _ in runs],
        "machines": sorted({run.get("machine", "?") for _, run in runs}),
        "figures": figures,
    }


def write_spread(path, sweep_dirs) -> Path:
    """Write the spread to ``path``; an existing file is replaced only if this command made it."""
    path = Path(path)
    if path.exists():
        try:
            ours = json.loads(path.read_text()).get("made_by") == MADE_BY
        except (ValueError, AttributeError):
            ours = False
        if not ours:
            raise DataError(f"{path}: exists and was not written by `{MADE_BY}`; expected a new path")
    return write_json(path, make_spread(sweep_dirs))


def read_spread(config_path) -> dict | None:
    """The config's recorded spread, or None when it has none; a DataError when the file is not one."""
    path = spread_path(config_path)
    if not path.is_file():
        return None
    try:
        spread = json.loads(path.read_text())
        ok = isinstance(spread, dict) and {"sweeps", "machines", "level", "figures"} <= set(spread)
    except ValueError as err:
        raise DataError(
            f"{path}, line {getattr(err, 'lineno', 1)}: not JSON; expected a spread file written by `{MADE_BY}`"
        ) from None
    if not ok:
        raise DataError(
            f"{path}: expected a spread file written by `{MADE_BY}` (keys sweeps, machines, level, figures)"
        )
    return spread


def spread_lines(figures: dict[str, float], spread: dict | None) -> list[str]:
    """report.md's ``## This run against the recorded spread``: each figure, the interval, inside or not."""
    if not spread or not figures:
        return []
    n, level = len(spread["sweeps"]), spread["level"]
    lines = [
        "## This run against the recorded spread",
        "",
        f"The {n} seeded repeats recorded for this config ({', '.join(spread['machines'])}) give each figure a "
        f"{level:.0%} prediction interval for one more run. By chance alone about {1 - level:.0%} of figures fall "
        "outside; several outside on the same kind of machine suggest something changed (code, data, library "
        "versions); on another machine the seconds may simply differ.",
        "",
        f"| figure | this run | {level:.0%} prediction interval | range of the {n} repeats | inside |",
        "|---|---:|---|---|---|",
    ]
    for name, value in figures.items():
        recorded = spread["figures"].get(name)
        if recorded is None:
            lines.append(f"| {name} | {_fmt(name, value)} | not recorded | | |")
            continue
        low, high = recorded["range"]
        interval = recorded["interval"]
        shown = f"{_fmt(name, interval[0])} to {_fmt(name, interval[1])}" if interval else "fewer than 3 repeats"
        inside = "" if not interval else ("yes" if interval[0] <= value <= interval[1] else "**no**")
        lines.append(f"| {name} | {_fmt(name, value)} | {shown} | {_fmt(name, low)} to {_fmt(name, high)} | {inside} |")
    return lines + [""]


def spread_summary(figures: dict[str, float], spread: dict | None, spread_file) -> str:
    """One line for the terminal: how many figures fall inside the recorded intervals ('' without a spread)."""
    if not spread:
        return ""
    judged = [(n, v) for n, v in figures.items() if (spread["figures"].get(n) or {}).get("interval")]
    inside = [n for n, v in judged if spread["figures"][n]["interval"][0] <= v <= spread["figures"][n]["interval"][1]]
    outside = [n for n, _ in judged if n not in inside]
    line = f"{len(inside)} of {len(judged)} headline figures inside the {spread['level']:.0%} prediction intervals of {spread_file}"
    return line + (f"; outside: {'; '.join(outside)}" if outside else "")


def readme_lines(spread: dict) -> list[str]:
    """The README's figures of the demo, generated from its recorded spread (tests compare the two)."""
    lines = [
        f"Over {len(spread['sweeps'])} seeded repeats ({', '.join(spread['machines'])}), each headline figure's range:"
    ]
    for name, recorded in spread["figures"].items():
        low, high = recorded["range"]
        lines.append(f"- {name}: {_fmt(name, low)} to {_fmt(name, high)}")
    return lines


def _fmt(name: str, value: float) -> str:
    return f"{value:.0f} s" if name == SECONDS else f"{value:.3f}"
