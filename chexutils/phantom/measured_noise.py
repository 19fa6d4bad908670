"""CheXpert's measured report-label noise: how often the report labeler says positive / negative /
uncertain / blank for a truly positive and a truly negative study, per observation.

Source: the 500 public test studies of ``rajpurkarlab/cheXpert-test-set-labels`` at commit a03eb34
(a03eb3438ca55c28eb4379dd0dd09e3b38c0c414): ``labeler/chexpert_labels.csv`` (the CheXpert labeler on
the studies' reports) joined on ``Study`` with ``groundtruth.csv`` (the majority of 5 radiologists,
the truth). The package ships the COUNTS (``measured_noise.csv``, 14 observations x truth 0/1 x 4
labels); ``count_table(labels_dir)`` recomputes them from the files and
``python benchmarks/measured_noise.py [LABELS_DIR]`` rewrites the file (a test checks that the shipped
table equals what the files give wherever they are on disk).

The phantom uses the rates with ``label_noise="measured"`` (``label_model.sample_reports``): each
study's report label is drawn given its truth. The test set is read from images, one study per
patient, so a finding only the report's history mentions counts as a wrong "certain" label here.
"""

from pathlib import Path

import numpy as np
import pandas as pd

from chexutils.core.errors import DataError
from chexutils.core.labels import OBSERVATIONS
from chexutils.data.test_set_files import (
    GROUNDTRUTH,
    LABELS_REPO_COMMIT,
    REPORT_LABELS_CSV,
    read_report_labels,
    read_study_labels,
)

TABLE = Path(__file__).with_name("measured_noise.csv")
REPORT_LABELS = ("positive", "negative", "uncertain", "blank")
LABEL_VALUES = {"positive": 1.0, "negative": 0.0, "uncertain": -1.0, "blank": np.nan}
COLUMNS = ("observation", "truth", *REPORT_LABELS)
HEADER = (
    "# CheXpert's measured report-label noise: studies per (observation, truth, report label).\n"
    "# truth: the 5-radiologist majority (groundtruth.csv); report label: the CheXpert labeler\n"
    "# (labeler/chexpert_labels.csv), joined on Study; the 500 public test studies of\n"
    f"# rajpurkarlab/cheXpert-test-set-labels at commit {LABELS_REPO_COMMIT}.\n"
    "# Regenerate: python benchmarks/measured_noise.py LABELS_DIR (chexutils.phantom.measured_noise).\n"
)


def count_table(labels_dir) -> pd.DataFrame:
    """Counts per observation and truth (0/1) of each report label, from the public files in ``labels_dir``."""
    labels_dir = Path(labels_dir)
    truth = read_study_labels(labels_dir / GROUNDTRUTH)
    report = read_report_labels(labels_dir / REPORT_LABELS_CSV)
    if not report.index.sort_values().equals(truth.index.sort_values()):
        raise DataError(f"{labels_dir / REPORT_LABELS_CSV}: other studies than {labels_dir / GROUNDTRUTH}")
    report = report.loc[truth.index]
    rows = []
    for obs in OBSERVATIONS:
        for value in (1, 0):
            labels = report[obs][truth[obs] == value]
            counts = {
                "positive": int((labels == 1.0).sum()),
                "negative": int((labels == 0.0).sum()),
                "uncertain": int((labels == -1.0).sum()),
                "blank": int(labels.isna().sum()),
            }
            rows.append({"observation": obs, "truth": value, **counts})
    return pd.DataFrame(rows, columns=list(COLUMNS))


def write_counts(table: pd.DataFrame, path=TABLE) -> Path:
    """Write ``table`` (``count_table``'s) with the header naming its source."""
    path = Path(path)
    path.write_text(HEADER + table.to_csv(index=False, lineterminator="\n"))
    return path


def read_counts(path=TABLE) -> pd.DataFrame:
    """The shipped counts (``count_table``'s layout); a malformed file is a DataError naming it."""
    path = Path(path)
    table = pd.read_csv(path, comment="#")
    if tuple(table.columns) != COLUMNS:
        raise DataError(f"{path}: columns {list(table.columns)}; expected {list(COLUMNS)}")
    expected = [(o, t) for o in OBSERVATIONS for t in (1, 0)]
    if list(zip(table["observation"], table["truth"])) != expected:
        raise DataError(f"{path}: expected one row per observation and truth 1, 0 in the CheXpert order")
    return table


def conditional_rates(table: pd.DataFrame | None = None) -> dict:
    """observation -> truth (1 / 0) -> report label -> P(report label | truth), from the counts."""
    table = read_counts() if table is None else table
    out: dict = {}
    for row in table.itertuples(index=False):
        counts = np.array([getattr(row, k) for k in REPORT_LABELS], float)
        if counts.sum() == 0:
            raise DataError(f"{TABLE}: {row.observation} has no studies with truth {row.truth}")
        out.setdefault(row.observation, {})[int(row.truth)] = dict(zip(REPORT_LABELS, counts / counts.sum()))
    return out
