"""The first lines of a sweep's report.md: what was run (data, size, epochs, weights, runs, sets).

Read from the runner config and the notebooks' defaults, so the report says what the numbers
below it are about before showing any of them.
"""

import dataclasses

from chexutils.core.rundir import EVAL_SETS, HELD_OUT, OFFICIAL_VALID
from chexutils.training.config import TrainConfig
from chexutils.workbook.guards import notebook_defaults

TRAIN_DEFAULTS = dataclasses.asdict(TrainConfig())
SHOWN = ("backbone", "image_size", "epochs", "batch_size", "lr", "pretrained", "policy")


def what_was_run(config, step_parameters) -> list[str]:
    """Markdown lines; ``step_parameters(config, step, run)`` is the runner's own merge of parameters."""
    lines = ["## What was run", ""]
    data = {
        **_first_defaults(
            config,
            "data_dir",
            "phantom",
            "phantom_patients",
            "phantom_valid_patients",
            "phantom_size",
            "phantom_mimics",
            "phantom_label_noise",
        ),
        **config.parameters,
    }
    if data.get("phantom"):
        size = data.get("phantom_size")
        where = f" ({data.get('phantom_patients', '?')} + {data.get('phantom_valid_patients', '?')} patients"
        where += f", {size[0]} × {size[1]} px" if isinstance(size, (list, tuple)) and len(size) == 2 else ""
        where += f", mimics drawn as {data['phantom_mimics']}" if data.get("phantom_mimics") else ""
        where += f", {data['phantom_label_noise']} label noise)" if data.get("phantom_label_noise") else ")"
        lines.append(
            f"- **Data:** generated phantom CheXpert{where} in `{data.get('data_dir')}`; "
            "not real X-rays, so its AUROCs are not comparable with published ones"
        )
    else:
        lines.append(f"- **Data:** CheXpert in `{data.get('data_dir', '?')}`")
    values: dict[str, list] = {}
    runs = config.runs() or [("default", {})]
    for step in config.steps:
        defaults = notebook_defaults(step.notebook)
        if not {"policy", "run_dir", "train"} <= set(defaults):
            continue
        for run in (step.runs if step.runs is not None else runs) if step.per_run else [None]:
            params = {**defaults, **step_parameters(config, step, run)}
            # notebook 03: TrainConfig fields under `train`, the dataclass's defaults for the rest
            merged = {**TRAIN_DEFAULTS, **params, **(params.get("train") or {})}
            for key in SHOWN:
                if key in merged and merged[key] not in values.setdefault(key, []):
                    values[key].append(merged[key])
    if values:
        lines.append("- **Training:** " + "; ".join(_describe(key, values[key]) for key in SHOWN if key in values))
    if config.grid:
        grid = "; ".join(f"{key}: {', '.join(map(str, options))}" for key, options in config.grid.items())
        lines.append(f"- **Runs:** {len(runs)} ({grid})")
    lines.append(
        f"- **Sets:** each table names its set. Official valid = {EVAL_SETS[OFFICIAL_VALID]}; "
        f"held-out = {EVAL_SETS[HELD_OUT]}."
    )
    return lines + [""]


def _describe(key: str, options: list) -> str:
    if key == "pretrained":
        names = ["ImageNet weights" if v == "imagenet" else "trained from scratch (random init)" for v in options]
        return " or ".join(names)
    if key == "batch_size":
        return "batch " + ", ".join("auto (32 up to 224 px, else 16)" if v == 0 else str(v) for v in options)
    label = {"image_size": "{} px", "epochs": "{} epoch(s)", "lr": "lr {}", "backbone": "{}", "policy": "policy {}"}[
        key
    ]
    return label.format(", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in options))


def _first_defaults(config, *keys) -> dict:
    """The first step's defaults for ``keys`` (what a notebook uses when the config leaves them out)."""
    defaults = notebook_defaults(config.steps[0].notebook) if config.steps else {}
    return {k: defaults[k] for k in keys if k in defaults}
