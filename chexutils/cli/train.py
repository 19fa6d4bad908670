"""`python -m chexutils train`: the command line of ``chexutils.training.train`` (its docstring is the help)."""

import argparse
import sys

from chexutils.core.devices import cuda_available
from chexutils.core.errors import DataError
from chexutils.core.io import Terminated, parse_yaml, terminate_cleanly
from chexutils.models.checkpoint import CheckpointError
from chexutils.training import train as library
from chexutils.training.config import check_cpu_sized, fields_help_text, given_values, make_config
from chexutils.training.train import TrainingDiverged, fit


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m chexutils train",
        description=library.__doc__,
        epilog=fields_help_text(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", help="YAML file with TrainConfig keys (flat, or under 'train:')")
    parser.add_argument(
        "--set",
        nargs="*",
        action="extend",  # --set a=1 --set b=2 keeps both (a plain nargs='*' would keep only the last)
        default=[],
        metavar="KEY=VALUE",
        help="override keys (YAML values; 1e-3 is read as the number)",
    )
    args = parser.parse_args(argv)
    try:
        with terminate_cleanly():  # SIGTERM (kill, a scheduler's cancel): finally blocks remove temp files
            overrides = set_overrides(args.set)
            cfg = make_config(args.config, **overrides)
            check_cpu_sized(*_given(args.config, overrides))  # after make_config: names and types first
            run_dir = fit(cfg)
    except (DataError, CheckpointError, TrainingDiverged) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Terminated as stop:
        print(f"error: stopped by {stop.name}; the last finished epoch's checkpoint is kept", file=sys.stderr)
        return 128 + stop.signum
    print(f"run finished: {run_dir}")
    return 0


def set_overrides(items: list[str]) -> dict:
    """``--set KEY=VALUE`` items as {key: YAML value}; no '=' or a key given twice is a DataError."""
    overrides = {}
    for item in items:
        key, equals, value = item.partition("=")
        if not equals or not key.strip():
            raise DataError(f"--set {item}: expected KEY=VALUE, e.g. --set lr=1e-4")
        if key in overrides:
            raise DataError(f"--set {item}: {key} is set twice; expected each key once")
        overrides[key] = parse_yaml(value, f"--set {item}")
    return overrides


def _given(source, overrides) -> tuple[dict, bool, str]:
    """What the config file and --set name (before defaults), whether CUDA is here, and where the values came from."""
    values, where = given_values(source, overrides)
    return values, cuda_available(), where if source else "python -m chexutils train"


if __name__ == "__main__":
    sys.exit(main())
