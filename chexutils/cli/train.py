"""`python -m chexutils train`: the command line of ``chexutils.training.train`` (its docstring is the help)."""

import argparse
import sys

import yaml

from chexutils.core.errors import DataError
from chexutils.core.io import Terminated, terminate_cleanly
from chexutils.models.checkpoint import CheckpointError
from chexutils.training import train as library
from chexutils.training.config import make_config
from chexutils.training.train import TrainingDiverged, fit


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m chexutils train",
        description=library.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", help="YAML file with TrainConfig keys (flat, or under 'train:')")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override keys (YAML values)")
    args = parser.parse_args(argv)
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = yaml.safe_load(value)
    try:
        with terminate_cleanly():  # SIGTERM (kill, a scheduler's cancel): finally blocks remove temp files
            cfg = make_config(args.config, **overrides)
            run_dir = fit(cfg)
    except (DataError, CheckpointError, TrainingDiverged) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Terminated as stop:
        print(f"error: stopped by {stop.name}; the last finished epoch's checkpoint is kept", file=sys.stderr)
        return 128 + stop.signum
    print(f"run finished: {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
