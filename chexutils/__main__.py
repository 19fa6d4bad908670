"""`python -m chexutils COMMAND [ARGS]`: every command line of the workbook in one place.

Each command is a module of ``chexutils.cli``; ``python -m chexutils COMMAND --help`` shows its help.
"""

import importlib
import os
import sys

# OpenMP threads waiting for work sleep instead of spinning: with more threads than free cores, spinning
# makes training collapse (docs/performance.md, benchmarks/contention.py). OpenMP reads this once, when
# torch loads it, so it is set here before any command imports torch; the runner's notebook kernels inherit
# it. A value the user set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

COMMANDS = {
    "workbook": "run a sweep config: notebooks executed by papermill, report.md (`make demo`)",
    "train": "train one model from a YAML config and --set overrides",
    "predict": "probabilities (and heatmaps) for new images from a run folder",
    "phantom": "generate the phantom CheXpert",
    "import_checkpoint": "a published checkpoint (torchxrayvision, CheXNet layouts) as a run folder",
    "power": "studies needed to detect a policy difference, from the test the workbook runs",
    "cache_admin": "list and clean image caches (`make clean-cache`)",
    "housekeeping": "remove the sweep and run folders the workbook made (`make clean-output`)",
    "public_labels": "clone the public test-set labels at their pinned commit into data/ (`make public-labels`)",
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {what}" for name, what in COMMANDS.items()]
    return "usage: python -m chexutils COMMAND [ARGS]\n\ncommands:\n" + "\n".join(lines)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"error: unknown command {command!r}; known: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"chexutils.cli.{command}")  # only the command's own dependencies load
    sys.argv[0] = f"python -m chexutils {command}"
    return module.main(rest) or 0


if __name__ == "__main__":
    sys.exit(main())
