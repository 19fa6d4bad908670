"""What a step's marker vouches for: the digest of the input files its parameters name, and the outputs it owns.

The runner (``chexutils.workbook.runner``) skips a step whose notebook, parameters, input files and
chexutils are unchanged since it succeeded and whose outputs are as it left them; these two pieces
decide which files count as a step's inputs and which step owns a file two steps both wrote.
"""

import hashlib
from pathlib import Path

from chexutils.core import paths
from chexutils.core.io import write_json
from chexutils.workbook.guards import read_marker


def release_outputs(marker: Path, outputs: dict) -> None:
    """Files this step just wrote are its outputs now: earlier steps' markers stop vouching for them.

    (05 and 05_compare-2 both write comparison.md; the later writer owns it, so a resume skips both.)"""
    for other in marker.parent.glob("*.json"):
        record = read_marker(other) if other != marker else {}
        if set(record.get("outputs", {})) & set(outputs):
            record["outputs"] = {k: v for k, v in record["outputs"].items() if k not in outputs}
            write_json(other, record)


def input_files_digest(params: dict) -> bytes:
    """Hash of the files the parameters name (e.g. a split CSV, a mapping JSON): a changed input reruns the step."""
    digest = hashlib.sha256()
    stack = list(params.values())
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
        elif isinstance(value, str) and value and len(value) < 4096:
            try:
                path = paths.resolve(value)
                if path.is_file():
                    digest.update(value.encode() + hashlib.sha256(path.read_bytes()).digest())
            except (OSError, ValueError):
                continue
    return digest.digest()
