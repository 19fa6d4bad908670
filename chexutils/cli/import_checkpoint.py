"""`python -m chexutils import_checkpoint`: the command line of ``chexutils.training.import_checkpoint`` (its docstring is the help)."""

import argparse
import sys

from chexutils.core.errors import DataError
from chexutils.core.io import Terminated, terminate_cleanly
from chexutils.core.rundir import RunDir
from chexutils.training import import_checkpoint as library
from chexutils.training.import_checkpoint import FORMATS, import_checkpoint


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m chexutils import_checkpoint",
        description=library.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("format", choices=sorted(FORMATS))
    parser.add_argument("checkpoint", help="the published weights file (a state dict, loaded with weights_only=True)")
    parser.add_argument("run_dir", help="run folder to create (config.json, best.pt)")
    parser.add_argument("--image-size", type=int, default=224, help="square side the images are resized to")
    parser.add_argument(
        "--force",
        action="store_true",
        help="RUN_DIR may hold a run: replace it whole (its checkpoints, history, predictions, metrics removed)",
    )
    args = parser.parse_args(argv)
    try:
        with terminate_cleanly():  # SIGTERM: finally blocks remove temp files and release the run lock
            run_dir = import_checkpoint(args.format, args.checkpoint, args.run_dir, args.image_size, force=args.force)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Terminated as stop:
        print(
            f"error: stopped by {stop.name}; import again (with --force if {args.run_dir} holds a run)", file=sys.stderr
        )
        return 128 + stop.signum
    record = json_record(run_dir)
    print(
        f"imported {args.checkpoint} -> {run_dir}: predicts {', '.join(record['mapping'].values())}; "
        f"not predicted (NaN): {', '.join(record['not_predicted']) or 'none'}"
    )
    return 0


def json_record(run_dir) -> dict:
    """The ``imported`` record of an imported run's config.json."""
    return RunDir(run_dir).config()["imported"]


if __name__ == "__main__":
    sys.exit(main())
