"""A CPU training step idle and beside competing busy processes: does training collapse under contention?

    python benchmarks/contention.py [--threads 1 2] [--busy 1] [--steps 6] [--rounds 3] [--size 64] [--batch 16]

Each setting times ``--steps`` training steps (forward, BCE loss, backward, Adam) of a DenseNet121 at
``--size`` px on random images, after one untimed warm-up step, with ``torch.set_num_threads(threads)``
(``TrainConfig.threads`` is 1 by default). It is timed with no process of ours competing and beside
``--busy`` pure-Python busy loops (one core each), alternated ``--rounds`` times. Printed: the median
step time of each and their ratio (issue 22's goal: at most 1.5x slower beside one competing process on
an otherwise idle machine). The load average is printed too: on a shared box the idle figure is not
idle. OpenMP reads ``OMP_WAIT_POLICY`` once, at start: compare ``OMP_WAIT_POLICY=PASSIVE python
benchmarks/contention.py ...`` with the default. Figures and conditions: docs/performance.md. A
benchmark: it prints figures and asserts nothing.
"""

import argparse
import multiprocessing
import os
import statistics
import time

import torch

from chexutils.core.labels import OBSERVATIONS
from chexutils.models.backbones import build_model
from chexutils.training.config import TrainConfig


def _busy(stop) -> None:
    """Spin on one core until ``stop`` is set (a competing process that never sleeps)."""
    x = 0
    while not stop.is_set():
        for _ in range(100_000):
            x += 1


def step_seconds(threads: int, steps: int, size: int, batch: int) -> list[float]:
    """Seconds per training step (median-ready list) with ``threads`` torch CPU threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        model = build_model("densenet121")
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        loss_fn = torch.nn.BCEWithLogitsLoss()
        images = torch.rand(batch, 3, size, size)
        targets = (torch.rand(batch, len(OBSERVATIONS)) > 0.5).float()
        times = []
        for i in range(steps + 1):
            start = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(images), targets)
            loss.backward()
            optimizer.step()
            if i:  # the first step warms up allocators and kernels
                times.append(time.perf_counter() - start)
        return times
    finally:
        torch.set_num_threads(before)


def measure(threads: int, busy: int, args) -> float:
    """Median step seconds beside ``busy`` competing busy loops."""
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    workers = [ctx.Process(target=_busy, args=(stop,), daemon=True) for _ in range(busy)]
    for worker in workers:
        worker.start()
    try:
        if workers:
            time.sleep(1.0)  # the busy loops are spinning before the clock starts
        return statistics.median(step_seconds(threads, args.steps, args.size, args.batch))
    finally:
        stop.set()
        for worker in workers:
            worker.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, nargs="+", default=[TrainConfig().threads])
    parser.add_argument("--busy", type=int, default=1, help="competing busy processes (one core each)")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3, help="idle / busy measurements, alternated")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    print(
        f"cores {os.cpu_count()}, load average before {os.getloadavg()[0]:.2f}; densenet121 {args.size} px, "
        f"batch {args.batch}, median of {args.steps} steps; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '-')}, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '-')}"
    )
    print("threads | idle s/step | beside busy s/step | ratio")
    for threads in args.threads:
        idle, loaded = [], []
        for _ in range(args.rounds):  # alternated, so the machine's own drifting load hits both alike
            idle.append(measure(threads, 0, args))
            loaded.append(measure(threads, args.busy, args))
        idle, loaded = statistics.median(idle), statistics.median(loaded)
        print(f"{threads:7d} | {idle:11.3f} | {loaded:18.3f} | {loaded / idle:5.2f}x", flush=True)
    print(f"load average after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
