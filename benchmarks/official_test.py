"""What the official-test step adds to `make demo`: phantom test set, predictions, scoring, figures.

    .venv/bin/python benchmarks/official_test.py [--test-patients 200] [--runs 4] [--size 64] [--threads N]

Times, each with wall and CPU seconds: writing the phantom's test set (128x104 px, as the demo),
predicting its images with an untrained DenseNet121 at ``--size`` (once per run), scoring one entry
on the test set (AUROC/AP CIs + 3 radiologists x 14 observations, 1,000 patient resamples), and the
five radiologist figures. Prints the estimate for the demo's step (runs + their ensemble). On a
shared, overloaded machine, ``--threads 1`` gives CPU seconds close to an idle core's wall time
(several torch threads spin while waiting and inflate CPU time). A benchmark, not a test: it
prints figures and asserts nothing about speed.
"""

import argparse
import tempfile
import time
from pathlib import Path

import torch

from chexutils.data import test_set_files as testset
from chexutils.data.loader import BatchLoader, ResizedImages
from chexutils.evaluation import official_test, readers
from chexutils.models.backbones import build_model
from chexutils.phantom.generate import generate_phantom
from chexutils.scoring.predict import predict_logits


def timed(label: str, fn, times: dict):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    times[label] = (time.perf_counter() - wall, time.process_time() - cpu)
    print(f"{label:<42} {times[label][0]:7.2f} s wall {times[label][1]:7.2f} s CPU", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--test-patients", type=int, default=200)
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    times = {}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        generate_phantom(out, patients=5, valid_patients=2, size=(128, 104), seed=0, workers=1)
        timed(
            f"phantom test set, {args.test_patients} patients",
            lambda: generate_phantom(
                out, patients=5, valid_patients=2, size=(128, 104), seed=0, workers=1, test_patients=args.test_patients
            ),
            times,
        )
        official = timed("read the test set", lambda: testset.read_official_test(out), times)
        model = build_model("densenet121", "binary").eval()
        loader = BatchLoader(ResizedImages(official.frame["image"], args.size), 64)
        logits = timed(
            f"predict {len(official.frame)} images at {args.size} px (one run)",
            lambda: predict_logits(model, loader, len(official.frame), torch.device("cpu")),
            times,
        )
        scores = official.frame[["study"]].assign(
            **{o: torch.sigmoid(logits[:, i]).numpy() for i, o in enumerate(official.labels.columns)}
        )
        scores = scores.groupby("study").max()
        result = timed(
            "score one entry (1,000 resamples)",
            lambda: readers.score_official_test(official.labels, scores, official.benchmark, official.patients),
            times,
        )
        entry = (official_test.RunDir(out / "run"), scores)
        timed("five radiologist figures", lambda: official_test.figures("bench", entry, official, result[1]), times)
    entries = args.runs + (1 if args.runs > 1 else 0)
    total = sum(times[k][0] for k in times if k.startswith(("phantom", "read", "five")))
    total += args.runs * times[next(k for k in times if k.startswith("predict"))][0]
    total += entries * times["score one entry (1,000 resamples)"][0]
    print(f"estimated step cost for {args.runs} runs + ensemble: {total:.1f} s wall (plus the notebook's kernel start)")


if __name__ == "__main__":
    main()
