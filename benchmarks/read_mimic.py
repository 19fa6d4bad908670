"""Time read_mimic(check_files=False) on synthetic CSVs of the MIMIC-CXR-JPG release's size.

    .venv/bin/python benchmarks/read_mimic.py [--studies N]

Writes the three gzipped CSVs (released headers, 1-2 images per study, 8 studies without a label
row as in the release) into a temporary folder, then prints the parse time. A benchmark, not a
test: it prints figures and asserts nothing about speed.
"""

import argparse
import gzip
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from chexutils.data import mimic

RELEASE_STUDIES = 227_835  # MIMIC-CXR-JPG v2.0.0: 377,110 images of 227,835 studies


def write_release(root: Path, studies: int, rng: np.random.Generator) -> int:
    subjects = rng.integers(10_000_000, 20_000_000, studies)
    study_ids = rng.choice(np.arange(50_000_000, 60_000_000), studies, replace=False)
    per_study = rng.choice([1, 2, 2], studies)
    of_image = np.repeat(np.arange(studies), per_study)
    n = len(of_image)
    dicoms = [f"{i:08x}-00000000-00000000-00000000-00000000" for i in range(n)]
    split = pd.DataFrame(
        {
            "dicom_id": dicoms,
            "study_id": study_ids[of_image],
            "subject_id": subjects[of_image],
            "split": rng.choice(mimic.SPLITS, n, p=[0.97, 0.01, 0.02]),
        }
    )
    meta = pd.DataFrame({column: "" for column in mimic.METADATA_COLUMNS}, index=range(n))
    meta["dicom_id"], meta["subject_id"], meta["study_id"] = dicoms, subjects[of_image], study_ids[of_image]
    meta["ViewPosition"] = rng.choice(["PA", "AP", "LATERAL", "LL", ""], n)
    labels = pd.DataFrame({"subject_id": subjects, "study_id": study_ids})
    for name in mimic.LABEL_COLUMNS[2:]:
        labels[name] = rng.choice(["1.0", "0.0", "-1.0", ""], studies)
    for name, frame in ((mimic.SPLIT_CSV, split), (mimic.METADATA_CSV, meta), (mimic.LABELS_CSV, labels.iloc[8:])):
        with gzip.open(root / name, "wt", newline="") as handle:
            frame.to_csv(handle, index=False)
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--studies", type=int, default=RELEASE_STUDIES)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        images = write_release(Path(tmp), args.studies, np.random.default_rng(0))
        start = time.perf_counter()
        frame = mimic.read_mimic(tmp, check_files=False)
        seconds = time.perf_counter() - start
    print(
        f"read_mimic(check_files=False): {images:,} images ({len(frame):,} labelled) in {seconds:.2f} s "
        f"({images / seconds:,.0f} images/s)"
    )


if __name__ == "__main__":
    main()
