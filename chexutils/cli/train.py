"""`python -m chexutils train`: the command line of ``chexutils.training.train`` (its docstring is the help)."""

import argparse
import sys

import yaml

from chexutils.core.devices import cuda_available
from chexutils.core.errors import DataError
from chexutils.models.checkpoint import CheckpointError
from chexutils.training import train as library
from chexutils.training.config import check_cpu_sized, fields_help_text, given_values, make_config
from chexutils.training.train import fit


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m chexutils train",
        description=library.__doc__,
        epilog=fields_help_text(),
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
        cfg = make_config(args.config, **overrides)
        check_cpu_sized(*_given(args.config, overrides))  # after make_config: names and types first
        run_dir = fit(cfg)
    except (DataError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"run finished: {run_dir}")
    return 0


def _given(source, overrides) -> tuple[dict, bool, str]:
    """What the config file and --set name (before defaults), whether CUDA is here, and where the values came from."""
    values, where = given_values(source, overrides)
    return values, cuda_available(), where if source else "python -m chexutils train"


if __name__ == "__main__":
    sys.exit(main())
