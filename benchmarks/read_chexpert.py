"""Time read_chexpert(check_files=False) on a CSV of the real train.csv's size (223,414 rows).

    .venv/bin/python benchmarks/read_chexpert.py [--rows N]

Builds the CSV from a phantom label sample (real schema and value conventions), then prints the
parse time. A benchmark, not a test: it prints figures and asserts nothing about speed.
"""

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from chexutils.data import real_stats
from chexutils.data.chexpert import read_chexpert, write_chexpert_csv
from chexutils.phantom import label_model as lm
from chexutils.phantom.layout import image_rows, sample_layout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=real_stats.TRAIN_IMAGES)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    patients = int(1.3 * args.rows / (real_stats.TRAIN_IMAGES / real_stats.TRAIN_PATIENTS)) + 10  # then cut to --rows
    studies, images = sample_layout(1, patients, "train", rng)
    models = lm.observation_models()
    cats, _ = lm.sample_truth(len(studies), models, rng)
    rows = image_rows(
        studies,
        images,
        lm.sample_reports(cats, models, lm.no_finding_mention_rate(models), rng),
        "CheXpert-v1.0-small/",
    )
    rows = rows.iloc[: args.rows]
    with tempfile.TemporaryDirectory() as tmp:
        csv_path = write_chexpert_csv(rows, Path(tmp) / "CheXpert-v1.0-small" / "train.csv")
        start = time.perf_counter()
        frame = read_chexpert(csv_path, check_files=False)
        seconds = time.perf_counter() - start
    print(
        f"read_chexpert(check_files=False): {len(frame):,} rows in {seconds:.2f} s ({len(frame) / seconds:,.0f} rows/s)"
    )


if __name__ == "__main__":
    main()
