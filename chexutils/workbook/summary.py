"""The first lines of a sweep's report.md: what this sweep shows, then what was run (data, size,
epochs, weights, runs, sets).

"What this sweep shows" is read from the files the steps wrote (comparison.md, phantom_check.json,
official_test.md, localisation.csv); "What was run" from the runner config and the notebooks'
defaults, so the report says what the numbers below it are about before showing any of them.
"""

import dataclasses
import json
import re
from pathlib import Path

import pandas as pd

from chexutils.core.rundir import EVAL_SETS, HELD_OUT, OFFICIAL_VALID, RunDir
from chexutils.evaluation.compare import markdown
from chexutils.evaluation.phantom_check import CHECK_JSON
from chexutils.explain.localise import format_scores
from chexutils.training.config import TrainConfig
from chexutils.workbook.guards import notebook_defaults

TRAIN_DEFAULTS = dataclasses.asdict(TrainConfig())
SHOWN = ("backbone", "image_size", "epochs", "batch_size", "lr", "pretrained", "policy")


def what_was_run(config, step_parameters) -> list[str]:
    """Markdown lines; ``step_parameters(config, step, run)`` is the runner's own merge of parameters."""
    lines = ["## What was run", "", data_line(config)]
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
    if config.grid or _named_runs(config):
        grid = "; ".join(f"{key}: {', '.join(map(str, options))}" for key, options in config.grid.items())
        named = _named_runs(config)
        total = len(config.runs()) + len(named)
        parts = [f"{len(config.runs())} from the grid ({grid})"] if config.grid else []
        parts += [f"{len(named)} named in a step ({', '.join(named)})"] if named else []
        lines.append(f"- **Runs:** {total}: {' + '.join(parts)}")
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


def data_line(config) -> str:
    """The data, with the phantom's patients per set (train, valid, official test) and image size."""
    data = {
        **_first_defaults(
            config,
            "data_dir",
            "phantom",
            "phantom_patients",
            "phantom_valid_patients",
            "phantom_test_patients",
            "phantom_size",
            "phantom_mimics",
            "phantom_label_noise",
        ),
        **config.parameters,
    }
    if not data.get("phantom"):
        return f"- **Data:** CheXpert in `{data.get('data_dir', '?')}`"
    size = data.get("phantom_size")
    where = f" ({data.get('phantom_patients', '?')} train + {data.get('phantom_valid_patients', '?')} valid"
    where += f" + {data['phantom_test_patients']} official test" if data.get("phantom_test_patients") else ""
    where += " patients"
    where += f", {size[0]} × {size[1]} px" if isinstance(size, (list, tuple)) and len(size) == 2 else ""
    where += f", mimics drawn as {data['phantom_mimics']}" if data.get("phantom_mimics") else ""
    where += f", {data['phantom_label_noise']} label noise)" if data.get("phantom_label_noise") else ")"
    return (
        f"- **Data:** generated phantom CheXpert{where} in `{data.get('data_dir')}`; "
        "not real X-rays, so its AUROCs are not comparable with published ones"
    )


def _named_runs(config) -> list[str]:
    """Runs a training step names itself (``runs:``), beyond the grid's, in order, each once."""
    names: list[str] = []
    for step in config.steps:
        if step.runs is not None and {"policy", "run_dir", "train"} <= set(notebook_defaults(step.notebook)):
            names += [name for name, _ in step.runs if name not in names]
    return names


# --- what this sweep shows: read from the files the steps wrote --------------------------------

AUROC_SECTION = "## AUROC on the official valid set"  # 05's first table: one row per run
RANKING_SECTION = "## Ranking of the runs"  # 05: chexutils.evaluation.paired_ranking.ranking_text
REPORTED = re.compile(r"^## Reported model: (?P<run>.+?) \((?P<how>chosen on [^)]*)\)", re.M)  # 06
CONTROL_MEANINGS = {
    "positive control recovered": (
        "positive control {positive control} not recovered",
        "the sweep did not find the difference the phantom was built with, so it is too small or too short to "
        "find real ones either: its 'no difference' verdicts mean 'not detectable here', not 'equal'",
    ),
    "null controls not flagged": (
        "null control(s) {null controls flagged} flagged",
        "the test called a difference where the phantom has none (a false positive): treat its other "
        "verdicts as suspect",
    ),
}


def sweep_shows(config) -> list[str]:
    """``## What this sweep shows``: runs, data, rankings (only where the paired test says so), failed
    controls with what that means, the reported model and its set, localisation; from the steps' files."""
    root = Path(config.output_dir)
    lines = ["## What this sweep shows", ""]
    comparison = _read(root / "comparison.md")
    rows = _table_rows(_section(comparison, AUROC_SECTION))
    if rows:
        lines.append(f"- **Runs:** {len(rows)} compared (the rows of the AUROC table below: {', '.join(rows)})")
    lines.append(data_line(config))
    ranking = _section(comparison, RANKING_SECTION)
    if ranking:
        lines.append("- **Ranking:** " + _ranking_verdict(ranking))
    lines += _controls(root, comparison)
    official = _read(root / "official_test.md")
    reported = REPORTED.search(official)
    if reported:
        lines.append(
            f"- **Reported model:** {reported['run']} ({reported['how']}), reported on the official test set "
            "beside the benchmark radiologists (never on the set that chose it)"
        )
    lines += _localisation(root)
    return lines + [""] if len(lines) > 2 else []


def _read(path: Path) -> str:
    return path.read_text() if path.is_file() else ""


def _section(text: str, start: str) -> str:
    """The body of the ``## `` section whose title starts with ``start`` (empty when absent)."""
    at = text.find(start)
    if at < 0:
        return ""
    body = text[at:].split("\n", 1)[1] if "\n" in text[at:] else ""
    end = body.find("\n## ")
    return (body if end < 0 else body[:end]).strip()


def _table_rows(section: str) -> list[str]:
    """The row labels of the first markdown table in a section (header and rule left out)."""
    table = [line for line in section.splitlines() if line.startswith("|")]
    return [line.split("|")[1].strip() for line in table[2:]]


def _ranking_verdict(text: str) -> str:
    """What ranking_text's sentence decides: the pairs its Holm-adjusted paired test ranks, else none."""
    if "nothing to rank" in text:
        return "nothing to rank (" + text.rstrip(".") + ")."
    decided = re.search(r"α = [0-9.]+: (.*?)(?: Not ranked|$| One seed)", text, re.S)
    verdict = decided.group(1).strip() if decided else ""
    if not verdict or verdict.startswith("no pair differs"):
        return (
            "none: the paired, seed-aware test (Holm) finds no difference between any two arms of runs, "
            "so no run is ranked above another, whatever their means."
        )
    return f"{verdict.rstrip('.')} (paired, seed-aware test, Holm); every other pair is not ranked."


def _controls(root: Path, comparison: str) -> list[str]:
    failed = []
    checks = json.loads(_read(root / CHECK_JSON) or "{}")
    for key, (what, meaning) in CONTROL_MEANINGS.items():
        if key in checks and not checks[key]:
            values = {k: ", ".join(v) if isinstance(v, list) else v for k, v in checks.items()}
            failed.append(f"{what.format_map(values)}: {meaning}")
    no_finding = _section(comparison, "## Negative control: No Finding")
    if "FLAGGED" in no_finding:
        failed.append(
            "negative control No Finding flagged (its targets are identical under both policies): seed noise or a "
            "change elsewhere moves an untouched label this much, so differences of that size mean nothing"
        )
    if failed:
        return ["- **Controls that failed:** " + "; ".join(failed) + "."]
    if checks:
        return ["- **Controls:** the phantom's positive and null controls passed (phantom_check.md below)."]
    return []


def _localisation(root: Path) -> list[str]:
    """Notebook 08's Grad-CAM localisation scores (IoU and hit rate against the drawn signs), per run scored."""
    lines = []
    for path in sorted(root.glob(f"*/{RunDir(root).localisation.name}")):
        table = pd.read_csv(path)
        if table.empty:
            continue
        lines += [
            f"- **Localisation** (notebook 08, Grad-CAM against the phantom's drawn signs, run {path.parent.name}; "
            "chance = the hit rate of a random pixel, the region's share of the image):",
            "",
            markdown(format_scores(table).set_index("observation")),
            "",
        ]
    return lines


def figure_lines(root: Path) -> list[str]:
    """Figures grouped by folder; each heatmaps/ folder of overlays behind one link with its count."""
    root = Path(root)
    heatmap_dirs = sorted({p.parent for p in root.rglob("heatmaps/*.png")})
    figures = sorted(p for p in root.rglob("*.png") if p.parent not in heatmap_dirs)
    if not figures and not heatmap_dirs:
        return []
    lines = ["", "## Figures", ""]
    folders = sorted({p.parent for p in figures} | {d.parent for d in heatmap_dirs})
    for folder in folders:
        rel = folder.relative_to(root).as_posix()
        name = "sweep" if rel in (".", "figures") else rel
        links = [f"[{p.stem}]({p.relative_to(root).as_posix()})" for p in figures if p.parent == folder]
        if (folder / "heatmaps") in heatmap_dirs:
            count = len(list((folder / "heatmaps").glob("*.png")))
            links.append(f"[{count} Grad-CAM heatmaps]({(folder / 'heatmaps').relative_to(root).as_posix()}/)")
        lines.append(f"- **{name}:** " + ", ".join(links))
    return lines
