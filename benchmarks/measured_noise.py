"""Rewrite the phantom's measured-noise table from the public test-set files.

    .venv/bin/python benchmarks/measured_noise.py [LABELS_DIR]

LABELS_DIR: a checkout of rajpurkarlab/cheXpert-test-set-labels at commit a03eb34 (default: the
shared copy beside the project, ../shared/data/cheXpert-test-set-labels). Counts, per observation and
truth (the 5-radiologist majority), how often the CheXpert labeler wrote each report label, and writes
chexutils/phantom/measured_noise.csv (chexutils.phantom.measured_noise.count_table / write_counts).
"""

import sys
from pathlib import Path

from chexutils.phantom import measured_noise

DEFAULT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cheXpert-test-set-labels"


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    labels_dir = Path(argv[0]) if argv else DEFAULT
    table = measured_noise.count_table(labels_dir)
    path = measured_noise.write_counts(table)
    print(f"wrote {path} from {labels_dir}")
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
