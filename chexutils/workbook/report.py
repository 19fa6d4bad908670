"""The sweep's ``report.md``: what the sweep shows, what was run, each step's status, the sections 05, 07
and 06 wrote, and the figures (the runner's command line writes it after every ``workbook run``)."""

from pathlib import Path

from chexutils.workbook.headline import headline_figures, read_spread, spread_lines, write_headline
from chexutils.workbook.runner import Config, Outcome, step_parameters
from chexutils.workbook.summary import figure_lines, sweep_shows, what_was_run

REPORT_SECTIONS = ("comparison.md", "phantom_check.md", "official_test.md")  # written by 05, 07, 06; in report.md


def write_report(config: Config, outcomes: list[Outcome], seconds: float | None = None) -> Path:
    """``output/<name>/report.md`` (and ``headline.json``): what the sweep shows, this run against the
    config's recorded spread, each step's status and time, links to notebooks and figures; ``seconds``: the
    run's wall-clock time (a headline figure when every step executed)."""
    root = config.output_dir
    figures = headline_figures(root, outcomes, seconds)
    write_headline(root, figures)
    lines = [
        f"# Workbook report: {config.name}",
        "",
        f"Config: `{config.path.name}`",
        "",
        *sweep_shows(config),
        *what_was_run(config, step_parameters),
        *spread_lines(figures, read_spread(config.path)),
        "## Steps",
        "",
        "| step | run | status | seconds | notebook |",
        "|---|---|---|---:|---|",
    ]
    for o in outcomes:
        rel = o.output.relative_to(root) if o.output.is_relative_to(root) else o.output
        lines.append(
            f"| {o.step} | {o.run or ''} | {o.status}{': ' + o.error if o.error else ''} | "
            f"{o.seconds:.1f} | [{rel}]({rel}) |"
        )
    for section in REPORT_SECTIONS:
        if (root / section).is_file():
            lines += ["", (root / section).read_text()]
    lines += figure_lines(root)
    report = root / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report
