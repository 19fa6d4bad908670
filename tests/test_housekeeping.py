"""Every housekeeping command the README documents, run as a user would on a copy of a repository:
nothing the command did not make may be gone afterwards (issue 20)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from chexutils.core import locks, paths
from chexutils.data.cache import CACHE_VERSION, MARKER


def _write(path: Path, text: str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _cache(folder: Path, complete: bool, marker: bool = True) -> Path:
    folder.mkdir(parents=True)
    if marker:
        _write(folder / MARKER, "image cache")
    np.save(folder / "images.npy", np.zeros((2, 4, 4), np.uint8))
    if complete:
        _write(folder / "meta.json", json.dumps({"version": CACHE_VERSION, "count": 2}))
    return folder


@pytest.fixture
def repo(tmp_path):
    """A copy of the project (code, Makefile) beside a .git, a .venv, real-looking data and outputs."""
    root = tmp_path / "repo"
    shutil.copytree(paths.PROJECT_ROOT / "chexutils", root / "chexutils", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(paths.PROJECT_ROOT / name, root / name)
    _write(root / ".git" / "HEAD", "ref: refs/heads/main\n")
    _write(root / ".venv" / "pyvenv.cfg", "home = /usr\n")
    _write(root / ".venv" / ".installed")  # newer than pyproject.toml: make's set-up step is done
    _write(root / "notebooks" / "00_data.ipynb", "{}")
    _write(root / "configs" / "demo.yaml", "name: demo\n")
    _write(root / "tests" / "test_x.py", "")
    _write(root / "data" / "real" / "CheXpert-v1.0-small" / "train.csv", "Path\n")
    _write(root / "data" / "real" / "notes.txt", "mine")
    _write(root / "output" / "README.md", "# output/")
    _write(root / "output" / "my-notes" / "plan.md", "mine")
    _write(root / "my cache" / "keep.txt", "mine")
    (root / "my").mkdir()
    _write(root / "my" / "sub" / "keep.txt", "mine")  # `CACHE="my cache"` split at the space would name it
    return root


def _owned_by_user(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def _make(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root)}  # the copy's chexutils, so its project root is the copy
    return subprocess.run(
        ["make", "-s", *args, f"PY={sys.executable}"], cwd=root, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    "args",
    [
        ("clean-cache",),
        ("clean-cache", "ALL=1"),
        ("clean-cache", "CACHE=data/real", "ALL=1"),
        ("clean-cache", "CACHE=.", "ALL=1"),
        ("clean-cache", "CACHE=my cache", "ALL=1"),
        ("clean-cache", "CACHE=/", "ALL=1"),
        ("clean-output",),
    ],
    ids=lambda a: " ".join(a),
)
def test_housekeeping_removes_only_what_it_made(repo, args):
    mine = _owned_by_user(repo)
    complete = _cache(repo / "data" / "phantom" / "cache" / "abc-1", complete=True)
    partial = _cache(repo / "data" / "phantom" / "cache" / "abc-2", complete=False)
    sweep_cache = _cache(repo / "output" / "demo" / "cache" / "def-1", complete=False)
    not_a_cache = _write(repo / "data" / "phantom" / "cache" / "notes" / "mine.txt")
    sweep = repo / "output" / "demo"
    _write(sweep / ".done" / "00_data.json", "{}")
    _write(sweep / ".lock", "")
    _write(sweep / "run-a" / "config.json", "{}")
    _write(sweep / "run-a" / ".lock", "")
    busy = repo / "output" / "busy"
    _write(busy / ".done" / "00_data.json", "{}")
    _write(busy / "run-b" / "config.json", "{}")
    _write(busy / "run-b" / ".lock", "")
    _write(busy / ".lock", "")
    with locks.exclusive(busy / "run-b" / ".lock", "a training"):  # a run being trained now
        done = _make(repo, *args)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    gone = sorted(str(p.relative_to(repo)) for p in mine | {not_a_cache} if not p.exists())
    assert gone == [], f"{' '.join(args)} removed what it did not make: {gone}\n{done.stdout}"
    assert (busy / "run-b" / "config.json").is_file()  # locked: kept
    if args[0] == "clean-output":
        assert not sweep.exists() and "busy" in done.stdout
    if args == ("clean-cache",):  # the real default roots: data/<set>/cache and output/<sweep>/cache
        assert complete.is_dir() and not partial.exists() and not sweep_cache.exists()
    if args == ("clean-cache", "ALL=1"):
        assert not complete.exists() and not partial.exists()


def test_a_cache_folder_needs_its_marker(tmp_path):
    from chexutils.data.cache_admin import clean_caches, is_cache

    legacy = _cache(tmp_path / "c" / "legacy", complete=True, marker=False)  # a complete cache from before the marker
    stranger = tmp_path / "c" / "dataset"
    _write(stranger / "images.npy")  # looks half like a cache, but nothing the cache wrote says so
    link = tmp_path / "c" / "link"
    link.symlink_to(legacy)
    assert is_cache(legacy) and not is_cache(stranger) and not is_cache(link)
    removed = clean_caches(tmp_path / "c", everything=True, log=lambda _: None)
    assert removed == [legacy] and stranger.is_dir() and link.is_symlink()


def test_a_symlinked_lock_is_refused_and_its_target_untouched(tmp_path):
    target = _write(tmp_path / "precious.txt", "keep me")
    run = tmp_path / "run"
    run.mkdir()
    (run / ".lock").symlink_to(target)
    with pytest.raises(locks.DataError, match="symbolic link"):
        with locks.exclusive(run / ".lock", "run folder"):
            pass
    with pytest.raises(locks.DataError, match="symbolic link"):
        locks.is_locked(run / ".lock")
    assert target.read_text() == "keep me"
