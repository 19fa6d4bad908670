"""`python -m chexutils workbook`: the command line of ``chexutils.workbook.runner`` (its docstring is the help)."""

import argparse
import functools
import json
import signal
import sys
import time
from pathlib import Path

from chexutils.core import locks
from chexutils.core.errors import DataError
from chexutils.core.io import Terminated, terminate_cleanly
from chexutils.workbook import headline, parallel, processes
from chexutils.workbook import runner as library
from chexutils.workbook.report import write_report
from chexutils.workbook.runner import execute, load_config


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m chexutils workbook",
        description=library.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="execute the notebooks of a config")
    run.add_argument("config", help="a YAML file, e.g. configs/demo.yaml")
    run.add_argument("--force", action="store_true", help="re-execute steps that already succeeded")
    run.add_argument("--output-root", default=None, help="folder for <name>/ (default: output/)")
    run.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="grid points run at once, each on its own GPU(s) or share of the cores (chexutils.workbook.parallel)",
    )
    run.add_argument(
        "--slurm",
        action="store_true",
        help="submit each grid point as a job through submitit, with the config's slurm: section",
    )
    spread = sub.add_parser(
        "spread",
        help="record a config's spread of headline figures from several finished seeded sweeps "
        "(chexutils.workbook.headline)",
    )
    spread.add_argument("out", help="the spread file to write, e.g. configs/demo.spread.json (beside its config)")
    spread.add_argument("sweeps", nargs="+", help="finished sweep folders, e.g. output/demo-seed0 output/demo-seed1")
    args = parser.parse_args(argv)
    if args.command == "spread":
        return record_spread(args.out, args.sweeps)
    try:
        config = load_config(args.config, args.output_root)
        headline.read_spread(config.path)  # a broken spread file is refused before any step runs
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    try:
        # SIGTERM (kill, a scheduler's cancel) and Ctrl-C: the workers, kernels and torchrun children are ended
        # at once (before papermill's clean-up could ask a kernel to shut down mid-cell), then Terminated
        # unwinds: the lock is released, and a rerun resumes the unfinished steps
        stop = functools.partial(processes.end_children, config.output_dir)
        with terminate_cleanly((signal.SIGTERM, signal.SIGINT), first=stop):
            with locks.exclusive(config.output_dir / ".lock", f"sweep folder {config.output_dir}"):
                if args.jobs > 1 or args.slurm:
                    outcomes = parallel.execute_parallel(config, jobs=args.jobs, force=args.force, slurm=args.slurm)
                else:
                    outcomes = execute(config, force=args.force)
                report = write_report(config, outcomes, time.perf_counter() - start)
                typical = headline.spread_summary(
                    json.loads((config.output_dir / headline.HEADLINE_JSON).read_text())["figures"],
                    headline.read_spread(config.path),
                    headline.spread_path(config.path),
                )
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Terminated as stop:
        print(
            f"error: stopped by {stop.name}; the workers and kernels of {config.output_dir} were ended, finished "
            "steps are kept and a rerun does only the unfinished ones",
            file=sys.stderr,
        )
        return 128 + stop.signum
    failed = [o for o in outcomes if o.status == "failed"]
    print(f"{len(outcomes)} step(s) in {time.perf_counter() - start:.1f} s; report: {report}")
    if typical:
        print(typical)
    for o in failed:
        print(f"failed: {o.step}{' [' + o.run + ']' if o.run else ''}: {o.error} -> {o.output}")
    return 1 if failed else 0


def record_spread(out, sweeps) -> int:
    """Write the spread file under its folder's lock and print the README's lines generated from it."""
    try:
        with locks.exclusive(Path(f"{out}.lock"), f"spread file {out}"):
            path = headline.write_spread(out, sweeps)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {path}; the README's lines for it:")
    print("\n".join(headline.readme_lines(json.loads(path.read_text()))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
