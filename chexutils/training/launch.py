"""Start a training run in this process or, for ``nproc_per_node > 1``, under torchrun as a subprocess.

Notebook 03 (and so the runner) calls ``train(cfg)``: one process trains in the kernel as before;
N processes run ``torchrun --standalone --nproc_per_node N -m chexutils train --config <tmp.yaml>``
with the same resolved config, their output streamed into the notebook as it comes. The run
folder is the one a single-process run writes (rank 0 writes it; config.json records world_size).
"""

import dataclasses
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from chexutils.core import paths
from chexutils.core.rundir import RunDir
from chexutils.training.config import TrainConfig
from chexutils.training.train import fit


class LaunchFailed(RuntimeError):
    """The torchrun subprocess exited with an error; its output (shown above) says why."""


def train(cfg: TrainConfig, stream=None, restart: bool = False) -> Path:
    """Train ``cfg`` in this process, or under torchrun when ``cfg.nproc_per_node > 1``; returns the run folder.

    ``restart``: delete the run's training state first and train again (the runner's ``--force``)."""
    if cfg.nproc_per_node <= 1 or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return fit(cfg, restart=restart)
    if restart:
        run = RunDir(paths.resolve(cfg.run_dir))
        for path in (run.checkpoint, run.best, run.history):
            path.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="chexutils-launch-") as folder:
        config_path = Path(folder) / "train.yaml"
        config_path.write_text(yaml.safe_dump(config_as_yaml(cfg), sort_keys=False))
        run_streamed(
            torchrun_command(config_path, cfg.nproc_per_node), child_env(cfg.nproc_per_node), stream or sys.stdout
        )
    return paths.resolve(cfg.run_dir)


def config_as_yaml(cfg: TrainConfig) -> dict:
    """The config as plain YAML values (tuples become lists); ``make_config`` reads it back unchanged."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(cfg).items()}


def torchrun_command(config_path, nproc: int) -> list[str]:
    """The command line a user would type, with this interpreter (``--standalone`` picks a free port)."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(nproc),
        "-m",
        "chexutils",  # chexutils.training.train has no __main__: the command line is `python -m chexutils train`
        "train",
        "--config",
        str(config_path),
    ]


def child_env(nproc: int) -> dict:
    """This environment, with the project importable and the CPU cores shared between the processes."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(paths.PROJECT_ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_streamed(command: list[str], env: dict, stream) -> None:
    """Run ``command``, copying its output (stdout and stderr) to ``stream`` as it arrives; raise on failure."""
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=str(paths.PROJECT_ROOT)
    )
    try:
        while chunk := os.read(process.stdout.fileno(), 65536):
            stream.write(chunk.decode(errors="replace"))
            stream.flush()
        code = process.wait()
    finally:  # the kernel was interrupted: do not leave the training processes behind
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=30)
    if code != 0:
        raise LaunchFailed(f"{' '.join(command[:6])} ... exited with code {code}; its output above says why")
