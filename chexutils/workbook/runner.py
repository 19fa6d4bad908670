"""Run the numbered notebooks headless with papermill, as a config says.

    python -m chexutils workbook run configs/demo.yaml [--force] [--jobs N] [--slurm]

A config names the sweep (``output/<name>/``), parameters shared by all notebooks, the list of
steps (notebooks), and a grid of runs; a step with ``per_run: true`` executes once per grid
point into ``output/<name>/<run>/``; a step with its own ``runs:`` list (named runs, each with its
parameters) executes once per listed run instead, so a later stage can train on what an earlier
step wrote (e.g. ``mixed`` on the ``mixed_mapping.json`` that 05 selected). A step whose notebook,
parameters and input files are unchanged since it last succeeded is skipped (resumable). A failing
notebook is kept with its error cell; shared steps stop the series, a failed run only stops that
run, and the exit code is non-zero.
"""

import functools
import itertools
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import papermill

from chexutils.core import paths
from chexutils.core.errors import DataError
from chexutils.core.io import read_yaml, write_json
from chexutils.training.config import FIELDS, check_train_values
from chexutils.training.run_identity import NAMED_AXES, run_name_part
from chexutils.workbook.guards import (
    changed_outputs,
    check_folder_name,
    check_inside,
    code_digest,
    notebook_defaults,
    read_marker,
    sha,
    why_rerun,
    written_since,
)
from chexutils.workbook.markers import input_files_digest as _input_files_digest
from chexutils.workbook.markers import release_outputs as _release_outputs
from chexutils.workbook.processes import KERNEL_CONFIG, FinishedKernelManager, ending_children
from chexutils.workbook.slurm import check_slurm

CONFIG_KEYS = {"name", "description", "parameters", "steps", "grid", "kernel", "slurm"}
STEP_KEYS = {"notebook", "parameters", "per_run", "runs"}


@dataclass
class Step:
    notebook: str
    parameters: dict = field(default_factory=dict)
    per_run: bool = False
    runs: list[tuple[str, dict]] | None = None  # the step's own named runs (replacing the grid's); implies per_run
    key: str = ""  # the notebook's stem, with "-2", "-3"... when the notebook appears again later in the steps

    def __post_init__(self):
        self.key = self.key or Path(self.notebook).stem


@dataclass
class Config:
    path: Path
    name: str
    parameters: dict
    steps: list[Step]
    grid: dict[str, list]
    kernel: str | None = None
    output_root: Path = paths.OUTPUT_DIR
    slurm: dict = field(default_factory=dict)  # submitit parameters for `--slurm` (chexutils.workbook.slurm.SLURM_KEYS)

    @property
    def output_dir(self) -> Path:
        return self.output_root / self.name

    def runs(self) -> list[tuple[str, dict]]:
        """(run name, grid values) for every grid point; an empty list when the config has no grid.

        A name joins the values; numbers carry their key (``U-Zeros_densenet121_seed0``); a training axis
        (``config.NAMED_AXES``: loss, recipe, ...) shows only where it is not the default."""
        if not self.grid:
            return []
        keys = list(self.grid)
        return [
            ("_".join(p for p in (_name_part(k, v) for k, v in zip(keys, values)) if p), dict(zip(keys, values)))
            for values in itertools.product(*(self.grid[k] for k in keys))
        ]


def _name_part(key: str, value) -> str:
    named = run_name_part(key.rpartition(".")[2], value) if key in NAMED_AXES or key.startswith("train.") else None
    if named is not None:
        return named
    return str(value) if isinstance(value, str) else f"{key.rpartition('.')[2]}{value}"


@dataclass
class Outcome:
    step: str
    run: str | None
    status: str  # "ok", "skipped", "failed"
    seconds: float
    output: Path
    error: str = ""


def load_config(path, output_root=None) -> Config:
    """Parse and check a runner config; every problem is a DataError naming the file and key.

    Results go to ``<output_root>/<name>/`` (default: the project's output/)."""
    path = paths.resolve(path)
    if not path.is_file():
        raise DataError(f"{path}: config file does not exist")
    raw = read_yaml(path, "runner config") or {}  # a syntax error or a key given twice: a DataError naming the line
    if not isinstance(raw, dict):
        raise DataError(f"{path} line 1: expected a mapping with keys {', '.join(sorted(CONFIG_KEYS))}")
    unknown = set(raw) - CONFIG_KEYS
    if unknown:
        raise DataError(
            f"{path}: unknown key(s) {', '.join(sorted(unknown))}; expected {', '.join(sorted(CONFIG_KEYS))}"
        )
    check_folder_name(raw.get("name"), f"{path}: key 'name'")
    steps, seen = [], {}
    for i, item in enumerate(raw.get("steps") or []):
        if not isinstance(item, dict) or "notebook" not in item or set(item) - STEP_KEYS:
            raise DataError(
                f"{path}: steps[{i}] must be a mapping with 'notebook' and optional 'parameters', 'per_run', 'runs'"
            )
        if not (paths.NOTEBOOK_DIR / item["notebook"]).is_file():
            raise DataError(f"{path}: steps[{i}] names {item['notebook']!r}, which is not in {paths.NOTEBOOK_DIR}")
        runs = _step_runs(path, i, item["runs"]) if "runs" in item else None
        stem = Path(item["notebook"]).stem
        seen[stem] = seen.get(stem, 0) + 1
        steps.append(
            Step(
                item["notebook"],
                dict(item.get("parameters") or {}),
                bool(item.get("per_run", False)) or runs is not None,
                runs,
                stem if seen[stem] == 1 else f"{stem}-{seen[stem]}",
            )
        )
    if not steps:
        raise DataError(f"{path}: key 'steps' must list at least one notebook")
    grid = raw.get("grid") or {}
    if not isinstance(grid, dict) or any(not isinstance(v, list) or not v for v in grid.values()):
        raise DataError(f"{path}: key 'grid' must map each name to a non-empty list of values")
    config = Config(
        path,
        raw["name"],
        dict(raw.get("parameters") or {}),
        steps,
        grid,
        raw.get("kernel"),
        paths.resolve(output_root) if output_root else paths.OUTPUT_DIR,
        check_slurm(path, raw.get("slurm")),
    )
    _check_parameters_declared(config)
    _check_grid_points_unique(path, grid, config.runs())
    for run_name, _ in config.runs():
        check_folder_name(run_name, f"{path}: grid run {run_name!r}")
    _check_training_values(config)
    return config


def _check_grid_points_unique(path: Path, grid: dict, runs: list[tuple[str, dict]]) -> None:
    """No value twice in a grid list (``seed: [0, 0]``), no two grid points with one folder name: a
    repeated point would train twice into one run folder and count twice in every comparison."""
    for key, values in grid.items():
        seen = []
        for value in values:
            if any(value == other for other in seen):
                raise DataError(f"{path}: grid key {key!r} lists {value!r} twice ({values!r}); each value once")
            seen.append(value)
    names = [name for name, _ in runs]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise DataError(
            f"{path}: grid points share the run folder name(s) {', '.join(twice)}; expected distinct values"
        )


def _step_runs(path: Path, i: int, runs) -> list[tuple[str, dict]]:
    """A step's ``runs:`` list: each a mapping with a folder ``name`` and the parameters of that run."""
    if not isinstance(runs, list) or not runs:
        raise DataError(f"{path}: steps[{i}].runs must be a non-empty list of mappings, each with a 'name'")
    out = []
    for j, run in enumerate(runs):
        name = run.get("name") if isinstance(run, dict) else None
        if not isinstance(name, str) or name in {n for n, _ in out}:
            raise DataError(
                f"{path}: steps[{i}].runs[{j}] needs a 'name' that is a new folder name "
                f"(no '/', not used twice); got {name!r}"
            )
        check_folder_name(name, f"{path}: steps[{i}].runs[{j}] name")  # like grid run names: never '..' or '/'
        out.append((name, {k: v for k, v in run.items() if k != "name"}))
    return out


def _check_training_values(config: Config) -> None:
    """Every grid point's training values (types, ranges, policy, backbone, size), before any step runs."""
    for step in config.steps:
        defaults = notebook_defaults(step.notebook)
        if not {"policy", "run_dir", "train"} <= set(defaults):  # not a training notebook
            continue
        runs = step.runs if step.runs is not None else (config.runs() or [("default", {})])
        for run in runs if step.per_run else [None]:
            params = {**defaults, **step_parameters(config, step, run)}
            values = {**{k: v for k, v in params.items() if k in FIELDS}, **(params.get("train") or {})}
            check_train_values(values, f"{config.path}: run {run[0] if run else '-'}, {step.notebook}")


@functools.cache
def _declared(notebook: str) -> frozenset[str]:
    """Names the notebook's parameters cell declares (read once per runner process)."""
    return frozenset(papermill.inspect_notebook(str(paths.NOTEBOOK_DIR / notebook)))


def _check_parameters_declared(config: Config) -> None:
    """Fail on a parameter no notebook declares (a typo would otherwise be silently ignored)."""
    declared = set().union(*(_declared(s.notebook) for s in config.steps))
    for where, names in (
        [("parameters", config.parameters), ("grid", config.grid)]
        + [(f"steps[{i}].parameters", s.parameters) for i, s in enumerate(config.steps)]
        + [
            (f"steps[{i}].runs[{j}]", values)
            for i, s in enumerate(config.steps)
            for j, (_, values) in enumerate(s.runs or [])
        ]
    ):
        unknown = {
            name
            for name in names
            if name.partition(".")[0] not in declared and not (name in NAMED_AXES and "train" in declared)
        }
        if unknown:
            raise DataError(
                f"{config.path}: {where} has {', '.join(sorted(unknown))}, which no step's notebook "
                f"declares; declared: {', '.join(sorted(declared))}"
            )


def step_parameters(config: Config, step: Step, run: tuple[str, dict] | None) -> dict:
    """What papermill injects: shared < step < grid values, plus output folders; only declared names.

    In strings (also nested in lists and mappings) ``{output_dir}`` and ``{run_name}`` are replaced, so a step can name files an
    earlier step wrote (e.g. ``{output_dir}/split/train.csv``). A dotted name sets one key of a mapping
    parameter: ``train.epochs: [1, 4]`` in a grid varies ``epochs`` inside notebook 03's ``train``.
    """
    params = {**config.parameters, **step.parameters, "output_dir": str(config.output_dir)}
    if run is not None:
        params.update(run[1])
        params.update(run_name=run[0], run_dir=str(config.output_dir / run[0]))
    declared = _declared(step.notebook)
    for name in [n for n in NAMED_AXES if n in params and n not in declared and "train" in declared]:
        params[f"train.{name}"] = params.pop(name)  # a bare training axis goes into notebook 03's train mapping
    for name in [n for n in params if "." in n]:
        outer, _, inner = name.partition(".")
        params[outer] = {**(params.get(outer) or {}), inner: params.pop(name)}
    fill = {"{output_dir}": str(config.output_dir), "{run_name}": run[0] if run else ""}
    params = {key: _fill_placeholders(value, fill) for key, value in params.items()}
    return {k: v for k, v in params.items() if k in declared}


def _fill_placeholders(value, fill: dict):
    """Replace placeholders in strings, also inside lists and mappings (e.g. policy_options)."""
    if isinstance(value, str):
        for placeholder, text in fill.items():
            value = value.replace(placeholder, text)
        return value
    if isinstance(value, list):
        return [_fill_placeholders(v, fill) for v in value]
    if isinstance(value, dict):
        return {k: _fill_placeholders(v, fill) for k, v in value.items()}
    return value


def execute(config: Config, force: bool = False, log=print) -> list[Outcome]:
    """Execute every step (per-run steps once per grid point); return one outcome per execution.

    Stopped (Ctrl-C, SIGTERM turned into an exception by the command line), the running kernel and its
    children are ended; steps that finished keep their markers, so a rerun does only the rest."""
    check_folder_name(config.name, f"{config.path}: key 'name'")  # also for a Config built in code
    config.output_dir.mkdir(parents=True, exist_ok=True)
    with ending_children(config.output_dir):
        return _execute(config, force, log)


def _execute(config: Config, force: bool, log) -> list[Outcome]:
    grid_runs = config.runs() or [("default", {})]
    failed_runs: set[str] = set()
    outcomes = []
    for step in config.steps:
        runs = step.runs if step.runs is not None else grid_runs
        targets = [r for r in runs if r[0] not in failed_runs] if step.per_run else [None]
        for run in targets:
            outcome = execute_step(config, step, run if step.per_run else None, force, log)
            outcomes.append(outcome)
            if outcome.status == "failed":
                if not step.per_run:
                    log(f"stopping: shared step {step.notebook} failed")
                    return outcomes
                failed_runs.add(run[0])
    return outcomes


def execute_step(config: Config, step: Step, run, force: bool, log) -> Outcome:
    source = paths.NOTEBOOK_DIR / step.notebook
    folder = config.output_dir / run[0] if run else config.output_dir / "notebooks"
    output = check_inside(folder / f"{step.key}.ipynb", config.output_root, "executed notebook")
    params = step_parameters(config, step, run)
    parts = {
        "notebook": sha(source.read_bytes()),
        "parameters": sha(json.dumps(params, sort_keys=True).encode()),
        "input files": _input_files_digest(params).hex(),
        "chexutils": code_digest(),
    }
    digest = sha(json.dumps(parts, sort_keys=True).encode())
    marker = config.output_dir / ".done" / f"{step.key}{'__' + run[0] if run else ''}.json"
    label = f"{step.key}.ipynb" + (f" [{run[0]}]" if run else "")
    previous = read_marker(marker) if output.is_file() else {}
    changed = changed_outputs(previous.get("outputs", {}), config.output_dir) if not force and previous else []
    if not force and previous.get("digest") == digest and not changed:
        log(
            f"skip   {label} (notebook, parameters, input files and chexutils unchanged since it succeeded "
            f"{previous.get('finished', '')}; --force re-runs it)"
        )
        return Outcome(step.notebook, run[0] if run else None, "skipped", 0.0, output)
    folder.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)
    last_good = output.with_name(f"{output.stem}.last-good{output.suffix}")
    if previous:  # keep the last successful execution until this one succeeds
        os.replace(output, last_good)
    if "force" in _declared(step.notebook) and force:
        params = {**params, "force": True}  # e.g. 03 deletes the run's checkpoints and trains again
    why = why_rerun(previous, parts, force)
    if changed and previous.get("digest") == digest:
        why = f"outputs changed since the last run: {', '.join(changed)}; re-running"
    log(f"run    {label} ({why})")
    start_ns = time.time_ns()  # files modified from now on under the step's folder are its outputs
    start = time.perf_counter()
    try:
        papermill.execute_notebook(
            str(source),
            str(output),
            parameters=params,
            cwd=str(paths.PROJECT_ROOT),
            kernel_name=config.kernel,
            progress_bar=False,
            log_output=False,
            config=KERNEL_CONFIG,
            kernel_manager_class=FinishedKernelManager,
        )
    except Exception as err:  # papermill keeps the executed notebook with its error cell
        seconds = time.perf_counter() - start
        name = getattr(err, "ename", type(err).__name__)  # the notebook's exception, not papermill's wrapper
        message = f"{name}: {getattr(err, 'evalue', err)}".splitlines()[0]
        kept = f"; the last good run is kept in {last_good}" if last_good.is_file() else ""
        log(f"FAILED {label} after {seconds:.1f} s: {message} (see {output}{kept})")
        return Outcome(step.notebook, run[0] if run else None, "failed", seconds, output, message)
    seconds = time.perf_counter() - start
    last_good.unlink(missing_ok=True)
    # the files the parameters name, as this run left them (a file the step writes itself is then no change)
    parts["input files"] = _input_files_digest(params).hex()
    digest = sha(json.dumps(parts, sort_keys=True).encode())
    outputs = written_since(config.output_dir / run[0] if run else config.output_dir, start_ns, config.output_dir)
    _release_outputs(marker, outputs)
    write_json(
        marker,
        {
            "digest": digest,
            "parts": parts,
            "outputs": outputs,
            "seconds": seconds,
            "parameters": params,
            "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        },
    )
    log(f"ok     {label} ({seconds:.1f} s)")
    return Outcome(step.notebook, run[0] if run else None, "ok", seconds, output)
