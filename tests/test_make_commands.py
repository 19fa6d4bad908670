"""`make lab` without the news pop-up and update check, and the conda route's documented commands are the
Makefile's own (issue 22): read through `make -n`, so a renamed target or a changed recipe fails here."""

import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest
from jupyterlab.handlers.announcements import NeverCheckForUpdate
from jupyterlab.labapp import LabApp

from chexutils.__main__ import COMMANDS
from chexutils.core import paths

ROOT = paths.PROJECT_ROOT
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
LAB_FLAGS = ["--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]


def make_commands(*args: str) -> list[list[str]]:
    """The commands ``make -n ARGS`` would run, as words: .venv/bin/ dropped, the root as $PWD, no --allow-root."""
    out = subprocess.run(["make", "-n", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    commands = []
    for line in out.replace("\\\n", " ").splitlines():
        words = [w.removeprefix(".venv/bin/").replace(str(ROOT), "$PWD") for w in shlex.split(line)]
        commands.append([w for w in words if w != "--allow-root"])
    return commands


def test_make_lab_turns_off_the_news_and_the_update_check():
    [lab] = [c for c in make_commands("lab") if c[:2] == ["jupyter", "lab"]]
    assert set(LAB_FLAGS) <= set(lab)
    app = LabApp()
    app.parse_command_line([w for w in lab[2:] if w.startswith("--LabApp.")])  # JupyterLab accepts them
    assert app.news_url is None and app.check_for_updates_class is NeverCheckForUpdate


@pytest.mark.parametrize("given", [None, "ACTIVE"])
def test_commands_start_openmp_with_passive_waiting_unless_told_otherwise(given):
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"} | (
        {"OMP_WAIT_POLICY": given} if given else {}
    )
    expected = given or "PASSIVE"
    # every make recipe (jupyter lab's kernels included) sees it ...
    probe = ["make", "-s", "--no-print-directory", "--eval", "probe-env: ; @echo $$OMP_WAIT_POLICY", "probe-env"]
    assert (
        subprocess.run(probe, cwd=ROOT, env=env, capture_output=True, text=True, check=True).stdout.strip() == expected
    )
    # ... and so does every `python -m chexutils` command (set before any command imports torch)
    code = "import os, chexutils.__main__, sys; print(os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == [expected, "False"]


def conda_commands() -> list[tuple[str, list[str]]]:
    """(command line, make arguments) for each line of docs/runner.md's conda block that names a make target."""
    page = (ROOT / "docs" / "runner.md").read_text()
    section = page[page.index("## Conda instead of make") :]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    out = []
    for line in block.splitlines():
        command, _, comment = line.partition("#")
        if comment.strip().startswith("make "):
            out.append((command.strip(), comment.split()[1:]))
    return out


def test_the_conda_section_runs_what_make_runs():
    documented = conda_commands()
    targets = {args[0] for _, args in documented}
    assert {"demo", "lab", "test"} <= targets, targets
    for command, make_args in documented:
        recipe = make_commands(*make_args[1:], make_args[0])  # variables first, then the target
        for part in command.split(" && "):
            words = shlex.split(part)
            if words[:3] == ["python", "-m", "chexutils"]:
                assert words[3] in COMMANDS, part
            if words[:4] == ["python", "-m", "chexutils", "workbook"]:
                assert (ROOT / words[5]).is_file(), part  # the config named exists
            assert words in recipe, f"{part!r} is not what make {' '.join(make_args)} runs: {recipe}"
