"""`make public-labels` / `python -m chexutils public_labels`, offline: a local repository stands in for the public one."""

import os
import re
import subprocess
import sys

import pytest

from chexutils.cli import public_labels
from chexutils.core import paths
from chexutils.data.test_set_files import LABELS_REPO_COMMIT, LABELS_REPO_URL


def run_git(*args, cwd=None) -> str:
    identity = ("-c", "user.name=test", "-c", "user.email=test@localhost", "-c", "init.defaultBranch=main")
    return subprocess.run(["git", *identity, *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def source(tmp_path):
    """A bare repository with two commits: (its path, the first commit, the second commit)."""
    work = tmp_path / "work"
    work.mkdir()
    run_git("init", "--quiet", cwd=work)
    (work / "groundtruth.csv").write_text("Study,Edema\nCheXpert-v1.0/test/patient64741/study1,1\n")
    run_git("add", ".", cwd=work)
    run_git("commit", "--quiet", "-m", "first", cwd=work)
    first = run_git("rev-parse", "HEAD", cwd=work)
    (work / "groundtruth.csv").write_text("changed later\n")
    run_git("commit", "--quiet", "-am", "second", cwd=work)
    second = run_git("rev-parse", "HEAD", cwd=work)
    bare = tmp_path / "mirror.git"
    run_git("clone", "--quiet", "--bare", str(work), str(bare))
    return bare, first, second


def leftovers(folder) -> list[str]:
    return [p.name for p in folder.iterdir() if ".partial-" in p.name]


def test_clones_at_the_pinned_commit_then_leaves_it_alone(tmp_path, source, capsys):
    bare, first, _ = source
    dest = tmp_path / "data" / "cheXpert-test-set-labels"
    assert public_labels.main(["--dest", str(dest), "--source", str(bare), "--commit", first[:7]]) == 0
    assert run_git("rev-parse", "HEAD", cwd=dest) == first  # the pinned commit, not the branch's newest
    assert (dest / "groundtruth.csv").read_text().startswith("Study,Edema")
    assert "cloned" in capsys.readouterr().out and leftovers(dest.parent) == []

    (dest / "groundtruth.csv").touch()
    assert public_labels.main(["--dest", str(dest), "--source", str(bare), "--commit", first]) == 0
    out = capsys.readouterr().out
    assert "already a clone at" in out and "nothing to do" in out


def test_the_source_can_come_from_the_environment(tmp_path, source, monkeypatch, capsys):
    bare, first, _ = source
    monkeypatch.setenv(public_labels.SOURCE_ENV, str(bare))
    assert public_labels.main(["--dest", str(tmp_path / "labels"), "--commit", first]) == 0
    assert run_git("rev-parse", "HEAD", cwd=tmp_path / "labels") == first


def test_a_folder_at_another_commit_or_not_a_clone_is_left_alone(tmp_path, source, capsys):
    bare, first, second = source
    dest = tmp_path / "labels"
    run_git("clone", "--quiet", str(bare), str(dest))  # at the second (newest) commit
    assert public_labels.main(["--dest", str(dest), "--source", str(bare), "--commit", first]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and f"a clone at {second[:7]}" in err and err.count("\n") == 1
    assert run_git("rev-parse", "HEAD", cwd=dest) == second

    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "mine.txt").write_text("keep")
    assert public_labels.main(["--dest", str(plain), "--source", str(bare), "--commit", first]) == 1
    assert "not a git clone" in capsys.readouterr().err and (plain / "mine.txt").read_text() == "keep"


def test_no_network_is_one_plain_error_line_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    unreachable = "http://127.0.0.1:1/cheXpert-test-set-labels.git"  # nothing listens on port 1
    dest = tmp_path / "data" / "labels"
    assert public_labels.main(["--dest", str(dest), "--source", unreachable]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert re.match(r"error: cannot reach http://127\.0\.0\.1:1/\S+ \(no network\?\): ", captured.err)
    assert not dest.exists() and leftovers(dest.parent) == []


def test_a_commit_the_source_lacks_is_an_error_and_leaves_nothing(tmp_path, source, capsys):
    bare, _, _ = source
    dest = tmp_path / "labels"
    assert public_labels.main(["--dest", str(dest), "--source", str(bare), "--commit", "0" * 40]) == 1
    assert capsys.readouterr().err.startswith(f"error: {bare} has no commit {'0' * 40}")
    assert not dest.exists() and leftovers(tmp_path) == []


def test_the_command_and_the_make_target_are_wired(tmp_path, source):
    bare, first, _ = source
    assert LABELS_REPO_COMMIT.startswith("a03eb34") and LABELS_REPO_URL.endswith(
        "rajpurkarlab/cheXpert-test-set-labels"
    )
    env = os.environ | {"PYTHONPATH": str(paths.PROJECT_ROOT), public_labels.SOURCE_ENV: str(bare)}
    done = subprocess.run(
        [sys.executable, "-m", "chexutils", "public_labels", "--dest", str(tmp_path / "x"), "--commit", first],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0 and "cloned" in done.stdout, done.stderr
    makefile = (paths.PROJECT_ROOT / "Makefile").read_text()
    target = re.search(r"^public-labels:.*## (.+)\n\t(.+)$", makefile, re.MULTILINE)
    assert target and "a03eb34" in target.group(1) and target.group(2).endswith("-m chexutils public_labels")
