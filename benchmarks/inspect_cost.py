"""What calibration, operating points and the ROC browser add to notebooks 04 and 05, in seconds.

    PYTHONPATH=. .venv/bin/python benchmarks/inspect_cost.py [--data data/phantom-demo] [--runs 4]

Uses a phantom's official valid set and 50 of its training patients as the held-out set, with
synthetic predictions (labels plus noise) for ``--runs`` runs, and times what the new cells do:
``calibration.calibrate_run``, ``operating_points.choose_and_report`` (3 rules) and the browser with
its gallery per run (notebook 04), then ``sweep_calibration`` and the sweep browser (notebook 05).
Prints wall time and this process's CPU time (on a shared, loaded machine the CPU time is the
better guide to what an idle one takes). A benchmark, not a test: it asserts nothing about speed.
"""

import argparse
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from chexutils.core import paths  # noqa: E402
from chexutils.core.labels import OBSERVATIONS  # noqa: E402
from chexutils.evaluation import calibration, operating_points
from chexutils.evaluation.evaluate import load_run_scores, read_split, score_run  # noqa: E402
from chexutils.report.widgets import RocBrowser  # noqa: E402
from chexutils.scoring.metrics import write_metrics  # noqa: E402
from chexutils.scoring.predict import write_predictions  # noqa: E402

RULES = ["youden", "sensitivity≥0.9", "specificity≥0.9"]


def fake_predictions(frame, rng):
    """Probabilities that track the labels (positives higher), one column per observation."""
    signal = frame[list(OBSERVATIONS)].fillna(0.0).clip(lower=0.0).to_numpy()
    return 1 / (1 + np.exp(-(rng.normal(-1.0, 1.0, signal.shape) + 1.5 * signal)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default="data/phantom-demo", help="folder holding CheXpert-v1.0-small/")
    parser.add_argument("--runs", type=int, default=4)
    args = parser.parse_args()
    chexpert = paths.find_chexpert(args.data)
    valid = read_split(chexpert / "valid.csv", args.data)
    train = read_split(chexpert / "train.csv", args.data)
    held_out = train[train["patient"].isin(sorted(train["patient"].unique())[:50])].reset_index(drop=True)
    print(f"official valid: {valid['study'].nunique()} studies, held-out: {held_out['study'].nunique()} studies")
    work = Path(tempfile.mkdtemp())
    rng = np.random.default_rng(0)
    timings = {"calibrate_run": [], "operating points": [], "browser + gallery": []}
    cpu = {name: [] for name in timings}

    def clock():
        return time.perf_counter(), time.process_time()

    def record(name, started):
        timings[name].append(time.perf_counter() - started[0])
        cpu[name].append(time.process_time() - started[1])

    folders = []
    for i in range(args.runs):
        folder = work / f"run{i}"
        write_predictions(valid, fake_predictions(valid, rng), folder / "predictions_valid.csv")
        write_predictions(held_out, fake_predictions(held_out, rng), folder / "predictions_test.csv")
        run, other = load_run_scores(folder, valid, "valid"), load_run_scores(folder, held_out, "test")
        table, summary = score_run(run, valid, n_resamples=100)
        write_metrics(table, summary, folder)
        start = clock()
        _, fig = calibration.calibrate_run(folder, run, "official valid", other, "held-out")
        plt.close(fig)
        record("calibrate_run", start)
        start = clock()
        points = operating_points.choose_and_report(run, "official valid", other, "held-out", RULES)
        operating_points.write_operating_points(points, folder)
        operating_points.display_table(points)
        record("operating points", start)
        start = clock()
        RocBrowser([run], image_root=chexpert.parent, set_name="official valid")
        record("browser + gallery", start)
        folders.append(folder)
    for name, values in timings.items():
        print(
            f"notebook 04, {name}: {np.mean(values):.2f} s wall per run (min {min(values):.2f}, "
            f"max {max(values):.2f}), {np.mean(cpu[name]):.2f} s CPU"
        )
    start = clock()
    runs = pd.DataFrame(
        {"policy": [f"p{i}" for i in range(args.runs)], "path": folders}, index=[f.name for f in folders]
    )
    calibration.sweep_calibration(runs, work / "calibration_comparison.csv")
    sweep_table = time.perf_counter() - start[0], time.process_time() - start[1]
    start = clock()
    RocBrowser.from_runs(folders, valid, "valid", image_root=chexpert.parent, set_name="official valid")
    sweep_browser = time.perf_counter() - start[0], time.process_time() - start[1]
    print(
        f"notebook 05, calibration beside AUROC: {sweep_table[0]:.2f} s wall, {sweep_table[1]:.2f} s CPU; "
        f"sweep browser ({args.runs} runs): {sweep_browser[0]:.2f} s wall, {sweep_browser[1]:.2f} s CPU"
    )
    wall = sum(sum(v) for v in timings.values()) + sweep_table[0] + sweep_browser[0]
    used = sum(sum(v) for v in cpu.values()) + sweep_table[1] + sweep_browser[1]
    print(f"total added to a {args.runs}-run sweep: {wall:.1f} s wall, {used:.1f} s CPU")


if __name__ == "__main__":
    main()
