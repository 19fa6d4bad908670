"""What identifies a run by its training config: the grid axes a run name carries, and the differences
that forbid resuming a run from its checkpoint (the rest of the config may change on resume)."""

import dataclasses
import os
from pathlib import Path

from chexutils.core import paths
from chexutils.training.config import TrainConfig

# TrainConfig fields a runner grid may name bare, as it names policy / backbone / seed (``loss: [bce,
# auc-margin]``; ``train.loss`` works too): the runner puts them into notebook 03's ``train`` mapping, and a
# run's folder name carries the value only where it is not the default, so sweeps that never vary them keep
# their run names (U-Ones_densenet121_seed0; U-Ones_densenet121_auc-margin_seed0).
NAMED_AXES = ("loss", "recipe", "init_from", "geometry", "augment_crop", "augment_flip", "augment_rotate")


def run_name_part(field: str, value) -> str | None:
    """A named axis's part of a run name ('' at the field's default); None when ``field`` is not a named axis."""
    if field not in NAMED_AXES:
        return None
    if value == getattr(TrainConfig, field):
        return ""
    if field == "init_from":
        return f"from-{Path(str(value)).name}"
    return str(value) if isinstance(value, str) else f"{field.removeprefix('augment_')}{value:g}"


RESUME_MAY_CHANGE = {
    "epochs",
    "workers",
    "device",
    "cache_dir",
    "use_cache",
    "predict_train",
    "cache_check",
    "allow_patient_overlap",
    "loss_sync_every",
    "adam_impl",
    "compile",
    "cache_on_device",
    "run_dir",
}  # run_dir: a moved or copied run folder resumes; everything else must match


PATH_FIELDS = {"data_dir", "train_csv", "valid_csv", "init_from"}  # compared as resolved paths on resume


def config_differences(saved: dict, current: TrainConfig) -> list[str]:
    """Keys whose values differ between a checkpoint's config and this one (resume must match).

    The run's identity: not its own folder (a moved or copied run resumes), paths compared once
    resolved (``data/x/`` = ``data/x`` = its absolute form), a key the checkpoint predates = its default."""
    now = dataclasses.asdict(current)
    defaults = dataclasses.asdict(TrainConfig())
    return sorted(
        k for k in now if k not in RESUME_MAY_CHANGE and _identity(k, saved.get(k, defaults[k])) != _identity(k, now[k])
    )


def _identity(key: str, value):
    if key in PATH_FIELDS and isinstance(value, str) and value:
        return os.path.normpath(paths.resolve(value))
    return _plain(value)


def _plain(value):
    return list(value) if isinstance(value, tuple) else value
