"""Every command the README and the docs pages show is one the code defines (issue 22): a renamed make target,
command, option, notebook parameter, config or demo run fails here.

Collected: the lines of every fenced ``bash`` block and every inline code span that starts a command. A
``make`` line must name targets of the Makefile and variables its recipe uses (``make -n`` runs it dry); a
``python -m chexutils`` line (or ``torchrun -m chexutils``) is parsed by that command's own argparse parser —
a full example must parse, a synopsis with placeholders (``RUN_DIR``, ``[--all]``) may only use options the
parser has; a ``papermill`` line must name a notebook and parameters its parameters cell declares; a run of
``output/demo/`` must be one the demo trains. `make demo` itself runs against a tiny demo in
tests/test_run_all.py, through the Makefile's own recipe; `make test` is what CI runs (tests/test_project.py).
"""

import argparse
import functools
import importlib
import re
import shlex
import shutil
import subprocess
from unittest import mock

import papermill
import pytest
import yaml

from chexutils.__main__ import COMMANDS
from chexutils.__main__ import main as chexutils_main
from chexutils.core import paths
from chexutils.training.config import FIELDS
from chexutils.workbook.runner import load_config

ROOT = paths.PROJECT_ROOT
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
STARTS = ("make ", "python -m ", ".venv/bin/python ", ".venv/bin/papermill ", "torchrun ")
OTHER_TOOLS = {"conda", "pip", "jupyter", "ruff"}  # the conda route: tests/test_make_commands.py
PLACEHOLDER = re.compile(
    r"[A-Z][A-Z_]*(\.\w+)?(\.\.\.)?|.*[\[|].*"
)  # RUN_DIR, N, FILE.csv, PATH..., [--all], list|clean


def documented_commands() -> list[tuple[str, str, bool]]:
    """(page name, command, full example?) for every command of a fenced bash line (each part of an ``&&``
    chain) and every inline command span of the pages; an inline span may be a fragment of prose."""
    out = []
    for page in PAGES:
        text = page.read_text()
        for block in re.findall(r"```bash\n(.*?)```", text, re.S):
            for line in block.replace("\\\n", " ").splitlines():
                out += [
                    (page.name, part.strip(), True) for part in line.partition("  #")[0].split("&&") if part.strip()
                ]
        fenced = re.sub(r"```.*?```", "", text, flags=re.S)
        spans = [span.strip() for span in re.findall(r"`([^`\n]+)`", fenced)]
        out += [
            (page.name, part.strip(), False) for span in spans if span.startswith(STARTS) for part in span.split("&&")
        ]
    return out


COMMAND_LINES = documented_commands()


@functools.cache
def demo_runs() -> set[str]:
    config = load_config(paths.CONFIG_DIR / "demo.yaml")
    return {name for name, _ in config.runs()} | {name for s in config.steps for name, _ in s.runs or []}


class _Captured(Exception):
    def __init__(self, parser):
        self.parser = parser


def chexutils_parser(command: str) -> argparse.ArgumentParser:
    """The argparse parser ``python -m chexutils COMMAND`` builds, caught before it parses anything."""
    assert command in COMMANDS, f"{command!r} is not a chexutils command; known: {', '.join(COMMANDS)}"
    module = importlib.import_module(f"chexutils.cli.{command}")

    def capture(parser, args=None, namespace=None):
        raise _Captured(parser)

    with mock.patch.object(argparse.ArgumentParser, "parse_args", capture):
        try:
            module.main([])
        except _Captured as caught:
            return caught.parser
    raise AssertionError(f"python -m chexutils {command} parsed no arguments")


def option_strings(parser: argparse.ArgumentParser) -> set[str]:
    """Every option of the parser and of its sub-commands."""
    options = set(parser._option_string_actions)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                options |= option_strings(sub)
    return options


def check_chexutils(words: list[str], line: str, full: bool) -> None:
    if words in ([], ["--help"]) or words == ["COMMAND"]:  # the list of commands, or the synopsis of all
        assert chexutils_main(words or ["--help"]) == (0 if words == ["--help"] else 2)
        return
    command, rest = words[0], words[1:]
    parser = chexutils_parser(command)
    unknown = {w.split("=")[0] for w in rest if w.startswith("--")} - option_strings(parser)
    assert not unknown, f"{line!r}: python -m chexutils {command} has no option {sorted(unknown)}"
    if not full or any(PLACEHOLDER.fullmatch(word) for word in rest):
        return  # a synopsis or a fragment of prose: its options are checked, its placeholders are not values
    if rest == ["--help"]:
        with pytest.raises(SystemExit) as done:
            parser.parse_args(rest)
        assert done.value.code == 0
        return
    try:
        args = parser.parse_args(rest)
    except SystemExit as err:
        raise AssertionError(f"{line!r} does not parse: exit {err.code}") from None
    if getattr(args, "config", None) and str(args.config).startswith("configs/"):
        load_config(ROOT / args.config)  # the config named exists and loads
    for item in getattr(args, "set", None) or []:
        assert item.partition("=")[0] in FIELDS, f"{line!r}: {item} is no TrainConfig field"
    for word in rest:
        run = re.match(r"output/demo/([^/]*densenet121[^/]*)", word)
        assert not run or run.group(1) in demo_runs(), f"{line!r}: make demo writes no run {run.group(1)}"


def check_papermill(words: list[str], line: str) -> None:
    notebook = ROOT / words[1]
    assert notebook.is_file(), f"{line!r}: no notebook {words[1]}"
    declared = set(papermill.inspect_notebook(str(notebook)))
    given = {}
    for flag, *values in zip(words, words[1:], words[2:]):
        if flag == "-p":
            given[values[0]] = values[1]
        elif flag == "-y":
            given.update(yaml.safe_load(values[0]))
    assert given and set(given) <= declared, f"{line!r}: {sorted(set(given) - declared)} not declared by {words[1]}"
    run = given.get("run_name")
    assert not (run and "output/demo/" in given.get("run_dir", "")) or run in demo_runs(), line


def make_targets() -> set[str]:
    return set(re.findall(r"^([a-z][a-z-]*):", (ROOT / "Makefile").read_text(), re.M))


def make_dry(*args: str) -> str:
    done = subprocess.run(["make", "-n", *args], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, f"make -n {' '.join(args)}: {done.stderr}"
    return done.stdout


def check_script(words: list[str], line: str) -> None:
    """``python benchmarks/X.py [--option ...]``, ``python -m benchmarks.X``, ``python -m pytest tests/...``:
    the file exists and names each option shown."""
    if words[0] == "-m" and words[1] == "pytest":
        assert all((ROOT / w).exists() for w in words[2:] if w.startswith("tests/")), line
        return
    script = ROOT / (words[1].replace(".", "/") + ".py" if words[0] == "-m" else words[0])
    assert script.is_file(), f"{line!r}: no {script.relative_to(ROOT)}"
    options = [w.strip("[]") for w in words if w.strip("[").startswith("--")]
    assert all(f'"{option}"' in script.read_text() for option in options), line


def check_make(words: list[str], line: str) -> None:
    targets = [w for w in words[1:] if "=" not in w]
    assert targets and set(targets) <= make_targets(), f"{line!r}: {targets} not all Makefile targets"
    make_dry(*words[1:])


def test_the_pages_show_commands_of_every_kind():
    kinds = {line.split()[0] for _, line, _ in COMMAND_LINES}
    assert {"make", ".venv/bin/python", ".venv/bin/papermill", "python"} <= kinds, kinds
    assert sum(page == "README.md" for page, _, _ in COMMAND_LINES) >= 5


@pytest.mark.parametrize("page, line, full", COMMAND_LINES, ids=[f"{p}:{line[:60]}" for p, line, _ in COMMAND_LINES])
def test_documented_command_is_one_the_code_defines(page, line, full):
    words = shlex.split(line)
    if words[0] in OTHER_TOOLS:
        return
    after_m = words[words.index("-m") + 1 :] if "-m" in words else []
    if words[0] == "make":
        if shutil.which("make") is None:
            pytest.skip("needs make")
        check_make(words, line)
    elif words[0].endswith("papermill"):
        check_papermill(words, line)
    elif after_m[:1] == ["chexutils"]:  # python -m chexutils, torchrun ... -m chexutils
        check_chexutils(after_m[1:], line, full)
    elif words[0].endswith("python") and len(words) > 1:
        check_script(words[1:], line)
    else:
        raise AssertionError(f"{page}: {line!r} is a command this test does not check; teach it how")


def test_the_readme_lists_exactly_the_chexutils_commands():
    readme = (ROOT / "README.md").read_text()
    sentence = readme[readme.index("lists them):") :].split(".\n")[0]
    listed = [span.split()[0] for span in re.findall(r"`([^`]+)`", sentence)]
    assert listed == list(COMMANDS)


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_readme_make_variables_change_what_the_target_runs():
    readme = (ROOT / "README.md").read_text()
    rows = [line for line in readme.splitlines() if line.startswith("| `make ")]
    checked = 0
    for row in rows:
        target = re.match(r"\| `make ([a-z-]+)`", row).group(1)
        for variable in re.findall(r"`([A-Z]+=[^`]+)`", row):
            variable = variable.replace("<name>", "phantom-study")
            assert make_dry(target, variable) != make_dry(target), f"make {target} ignores {variable}"
            checked += 1
    assert checked >= 3  # CONFIG, JOBS, FORCE of make demo


def test_readme_paths_exist():
    readme = (ROOT / "README.md").read_text()
    spans = re.findall(r"`((?:configs|tests|notebooks|docs|benchmarks|chexutils)/[^`\s]*)`", readme)
    assert spans
    for span in spans:
        assert list(ROOT.glob(span.replace("<name>", "*"))), span
