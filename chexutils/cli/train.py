"""`python -m chexutils train`: the command line of ``chexutils.training.train`` (its docstring is the help)."""

import argparse
import dataclasses
import inspect
import io
import re
import sys
import textwrap
import tokenize

from chexutils.core.devices import cuda_available
from chexutils.core.errors import DataError
from chexutils.core.io import Terminated, parse_yaml, terminate_cleanly
from chexutils.models.checkpoint import CheckpointError
from chexutils.training import train as library
from chexutils.training.config import FIELDS, TrainConfig, check_cpu_sized, given_values, make_config
from chexutils.training.train import TrainingDiverged, fit


def field_help() -> dict[str, str]:
    """Each field's meaning: the comment beside it in ``TrainConfig`` (and the comment lines continuing it).

    Read from the source, so the class stays the one home of every field's default and meaning."""
    source = inspect.getsource(TrainConfig)
    comments = {
        tok.start[0]: tok.string.lstrip("#").strip()
        for tok in tokenize.generate_tokens(io.StringIO(source).readline)
        if tok.type == tokenize.COMMENT
    }
    out, current = {}, None
    for number, line in enumerate(source.splitlines(), start=1):
        match = re.match(r"    (\w+): ", line)
        if match and match.group(1) in FIELDS:
            current = match.group(1)
            out[current] = comments.get(number, "")
        elif current and line.strip().startswith("#") and not line.strip().startswith("# ---"):
            out[current] = f"{out[current]} {comments[number]}".strip()  # a comment continued on the next line
        else:
            current = None
    return out


def fields_help_text(width: int = 100) -> str:
    """Every field with its default and meaning, for ``python -m chexutils train --help``."""
    defaults = dataclasses.asdict(TrainConfig())
    lines = ["TrainConfig fields (--set KEY=VALUE, or keys of the --config YAML):"]
    for name, meaning in field_help().items():
        lines.append(f"  {name} (default: {defaults[name]!r})")
        lines += textwrap.wrap(
            meaning, width, initial_indent=" " * 6, subsequent_indent=" " * 6, break_on_hyphens=False
        )
    return "\n".join(lines)


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
