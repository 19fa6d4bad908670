"""Guards of the notebook runner: safe folder names and output paths, what a step's skip depends on.

Kept apart from workbook.py (which runs the steps) so each rule is in one small place.
"""

import ast
import functools
import hashlib
import json
import os
import re
from pathlib import Path

import papermill

from chexutils.core import paths
from chexutils.core.errors import DataError
from chexutils.data.cache import MARKER as CACHE_MARKER


@functools.cache
def notebook_defaults(notebook: str) -> dict:
    """The literal default of each parameter the notebook declares (a non-literal default is left out)."""
    out = {}
    for name, spec in papermill.inspect_notebook(str(paths.NOTEBOOK_DIR / notebook)).items():
        try:
            out[name] = ast.literal_eval(spec["default"])
        except (ValueError, SyntaxError):
            pass
    return out


def check_folder_name(name, where: str) -> str:
    """A plain folder name (letters, digits, ``.``, ``_``, ``-``, ``+``, ``=``; not ``.`` or ``..``) or a DataError.

    Sweep and run names become folders under the output root; ``..`` or a ``/`` would write elsewhere."""
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_+=-][A-Za-z0-9._+=-]*", name) or name in (".", ".."):
        raise DataError(
            f"{where} is {name!r}; expected a plain folder name (letters, digits, '.', '_', '-', '+', '='; "
            "not starting with '.'), since it names a folder under the output root"
        )
    return name


def check_inside(path: Path, root: Path, what: str) -> Path:
    """``path`` if it resolves inside ``root`` and is no source notebook, else a DataError (never write elsewhere)."""
    resolved = path.resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise DataError(f"{what} {path} resolves to {resolved}, outside the output folder {root.resolve()}; refused")
    if resolved.parent == paths.NOTEBOOK_DIR.resolve():
        raise DataError(f"{what} {path} would overwrite the source notebook {resolved}; refused")
    return path


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@functools.cache
def code_digest() -> str:
    """Hash of the chexutils package's source files: a changed package re-runs the steps."""
    package = Path(__file__).resolve().parents[1]  # chexutils/
    digest = hashlib.sha256()
    for path in sorted(p for p in package.rglob("*") if p.suffix in (".py", ".csv") and p.is_file()):
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def read_marker(marker: Path) -> dict:
    try:
        return json.loads(marker.read_text())
    except (OSError, ValueError):
        return {}


def why_rerun(previous: dict, parts: dict, force: bool) -> str:
    """Why a step runs: first run, --force, or what changed since it last succeeded."""
    if force:
        return "--force"
    if not previous:
        return "no successful run recorded"
    changed = [name for name, value in parts.items() if previous.get("parts", {}).get(name) != value]
    return f"{', '.join(changed) or 'record'} changed since it last succeeded"


NOT_OUTPUTS = ("report.md",)  # written by the runner itself, after the steps


def written_since(folder: Path, start_ns: int, root: Path) -> dict[str, str]:
    """``{path relative to root: sha256}`` of the files under ``folder`` modified at or after ``start_ns``.

    What a step wrote (its outputs), recorded in its success marker so that an output changed behind the
    runner's back re-runs the step. Left out: hidden files and folders (markers, locks), executed
    notebooks (checked on their own), image caches (their own key covers their inputs), the report."""
    out = {}
    for here, dirs, files in os.walk(folder):
        if CACHE_MARKER in files:
            dirs[:] = []
            continue
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            path = Path(here) / name
            if name.startswith(".") or name.endswith(".ipynb") or name in NOT_OUTPUTS:
                continue
            try:
                if path.stat().st_mtime_ns >= start_ns:
                    out[path.relative_to(root).as_posix()] = file_sha(path)
            except OSError:
                continue
    return out


def file_sha(path: Path) -> str | None:
    """sha256 of a file's bytes, or None when it cannot be read (gone)."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


def changed_outputs(recorded: dict, root: Path) -> list[str]:
    """The recorded outputs (relative to ``root``) whose bytes differ now, or that are gone."""
    return sorted(rel for rel, digest in recorded.items() if file_sha(root / rel) != digest)
