"""Time each step of a runner config, optionally scaled down: wall seconds and CPU seconds.

    python benchmarks/runner_budget.py configs/demo.yaml --patients 100 --output-root /tmp/budget

On a shared machine wall time says little; the CPU seconds of the notebook kernels (children of
this process) do: on an idle 2-core box a step's wall time lies between CPU/2 (both cores busy)
and CPU (one core). ``--patients``/``--valid-patients`` scale the phantom, ``--epochs`` the
training, so a budget can be extrapolated from a small run.
"""

import argparse
import resource
import time

from chexutils.workbook import runner as workbook


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("--output-root", required=True)
    parser.add_argument("--data-dir", default=None, help="phantom folder (default: <output-root>/data)")
    parser.add_argument("--patients", type=int, default=None)
    parser.add_argument("--valid-patients", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None)
    args = parser.parse_args()
    config = workbook.load_config(args.config, args.output_root)
    config.parameters["data_dir"] = args.data_dir or f"{args.output_root}/data"
    if args.patients:
        config.parameters["phantom_patients"] = args.patients
    if args.valid_patients:
        config.parameters["phantom_valid_patients"] = args.valid_patients
    if args.epochs:
        for step in config.steps:
            if "epochs" in step.parameters:
                step.parameters["epochs"] = args.epochs
    rows = []

    def log(message: str) -> None:
        print(message, flush=True)

    grid_runs = config.runs() or [("default", {})]
    total_wall, total_cpu = 0.0, 0.0
    for step in config.steps:
        for run in (step.runs if step.runs is not None else grid_runs) if step.per_run else [None]:
            cpu, start = _children_cpu(), time.perf_counter()
            outcome = workbook._execute_step(config, step, run, False, log)
            wall, used = time.perf_counter() - start, _children_cpu() - cpu
            total_wall, total_cpu = total_wall + wall, total_cpu + used
            rows.append((step.key, run[0] if run else "", outcome.status, wall, used))
            print(
                f"TIMING {step.key:16s} {rows[-1][1]:28s} {outcome.status:8s} wall {wall:8.1f} s  CPU {used:8.1f} s",
                flush=True,
            )
    print(f"\n{'step':16s} {'run':28s} {'status':8s} {'wall s':>8s} {'CPU s':>8s}")
    for key, run, status, wall, used in rows:
        print(f"{key:16s} {run:28s} {status:8s} {wall:8.1f} {used:8.1f}")
    print(
        f"{'total':16s} {'':28s} {'':8s} {total_wall:8.1f} {total_cpu:8.1f}  "
        f"(idle 2-core wall estimate {total_cpu / 2:.0f}-{total_cpu:.0f} s)"
    )


if __name__ == "__main__":
    main()
