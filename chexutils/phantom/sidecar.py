"""Read a phantom's sidecar: the true findings per study and the expected answer per observation.

``phantom_truth.json`` (what the generator planted and the expected better policy, with the named
positive and null controls) and ``phantom_truth.csv`` (per study truth, category and severity).
"""

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from chexutils.core.errors import DataError
from chexutils.core.labels import OBSERVATIONS

TEST_TRUTH_JSON = "phantom_test_truth.json"  # the phantom official test set's truth, beside its labels
TEST_TRUTH_CSV = "phantom_test_truth.csv"

TRUTH_JSON = "phantom_truth.json"
TRUTH_CSV = "phantom_truth.csv"
# 4: the expected answer over a family of learners (probability and logit noise), the label noise and the
# truth model recorded (parents through faint children are faint, No Finding by the labeler's rule);
# 3: records how mimics are drawn; 2: the expected answer from the model (1: "q > 0.5")
SIDECAR_VERSION = 4
READABLE_VERSION = 3  # the oldest sidecar read as it is: same keys, its own answer for its own data
EXPECTED_KEYS = ("expected_better_policy", "positive_controls", "primary_positive_control", "null_controls")


@dataclass(frozen=True)
class PhantomTruth:
    """A phantom's truth: ``findings`` (study x observation, 0/1), the expected better policy per observation,
    the positive and null controls, and the whole sidecar record (``meta``)."""

    findings: pd.DataFrame
    expected: dict
    positive_controls: list
    primary_positive_control: str | None
    null_controls: list
    meta: dict
    categories: pd.DataFrame | None = None  # study x observation latent kind (none / clear / faint / mimic)


def read_truth(chexpert_dir) -> PhantomTruth | None:
    """The sidecar of the phantom in ``chexpert_dir``, or None where there is none (real data)."""
    chexpert_dir = Path(chexpert_dir)
    json_path, csv_path = chexpert_dir / TRUTH_JSON, chexpert_dir / TRUTH_CSV
    if not json_path.is_file():
        return None
    try:
        meta = json.loads(json_path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"{json_path} line {err.lineno}: not valid JSON ({err.msg})") from None
    missing = [k for k in EXPECTED_KEYS if k not in meta]
    if missing or meta.get("sidecar_version", 1) < READABLE_VERSION:
        raise DataError(
            f"{json_path}: an old phantom sidecar without {', '.join(missing) or 'the current version'}; "
            "expected the expected answer per observation — call generate_phantom on this folder again "
            "(it refreshes the sidecar) or delete the phantom"
        )
    table, categories = _read_findings(csv_path)
    return PhantomTruth(
        table,
        dict(meta["expected_better_policy"]),
        list(meta["positive_controls"]),
        meta["primary_positive_control"],
        list(meta["null_controls"]),
        meta,
        categories,
    )


def _read_findings(csv_path: Path) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """(study x observation truth 0/1, study x observation latent kind or None where the file has no kinds)."""
    if not csv_path.is_file():
        raise DataError(f"{csv_path}: the phantom's per-study truth is missing; expected it beside {TRUTH_JSON}")
    truth = pd.read_csv(csv_path)
    columns = [f"{o}|truth" for o in OBSERVATIONS]
    missing = [c for c in ["study", *columns] if c not in truth.columns]
    if missing:
        raise DataError(
            f"{csv_path} line 1: missing column(s) {', '.join(missing)}; expected study and '<observation>|truth'"
        )
    truth = truth.set_index("study")
    findings = truth[columns].set_axis(list(OBSERVATIONS), axis=1)
    kinds = [o for o in OBSERVATIONS if f"{o}|category" in truth.columns]  # No Finding has no latent kind
    categories = truth[[f"{o}|category" for o in kinds]].set_axis(kinds, axis=1) if kinds else None
    return findings, categories
