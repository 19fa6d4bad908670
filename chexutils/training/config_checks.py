"""Check a training config before any work starts: types, ranges, names, combinations, leakage.

``check_train_values`` runs in ``make_config`` (so ``image_size: abc`` or ``epochs: 0`` fail at
once, naming the key) and in the runner for every grid point of a sweep at load time.
"""

import dataclasses
import math
import re
import types

import pandas as pd

from chexutils.core.errors import DataError

BLANK_OPTIONS = ("negative", "ignore")
PRETRAINED = (None, "imagenet")
DEVICE_PATTERN = r"auto|cpu|mps|cuda(:\d+)?"
# (lowest allowed, whether the lowest is allowed) per numeric field
LOWER_BOUNDS = {
    "image_size": (16, True),
    "epochs": (1, True),
    "batch_size": (0, True),
    "lr": (0, False),
    "weight_decay": (0, True),
    "lr_step_epochs": (1, True),
    "lr_gamma": (0, False),
    "seed": (0, True),
    "max_steps_per_epoch": (0, True),
    "workers": (0, True),
}


def check_train_values(values: dict, where: str) -> None:
    """Every given TrainConfig value has its field's type and range, and the names exist; else a DataError."""
    from chexutils.training.config import TrainConfig

    fields = {f.name: f.type for f in dataclasses.fields(TrainConfig)}
    for key, value in values.items():
        if key in fields:
            _check_type(key, value, fields[key], where)
    for key, (low, inclusive) in LOWER_BOUNDS.items():
        value = values.get(key)
        if value is not None and (value < low if inclusive else value <= low):
            raise DataError(f"{where}: {key} is {value!r}; expected a number {'>=' if inclusive else '>'} {low}")
    if "betas" in values:
        betas = values["betas"]
        if len(betas) != 2 or not all(
            isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1 for b in betas
        ):
            raise DataError(f"{where}: betas is {betas!r}; expected two numbers in [0, 1)")
    _check_names(values, where)


def _check_type(key: str, value, annotation, where: str) -> None:
    allowed = annotation.__args__ if isinstance(annotation, types.UnionType) else (annotation,)
    ok = False
    for kind in allowed:
        if kind is type(None):
            ok |= value is None
        elif kind is float:
            ok |= isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        elif kind is int:
            ok |= isinstance(value, int) and not isinstance(value, bool)
        elif kind is tuple:
            ok |= isinstance(value, (list, tuple))
        else:
            ok |= isinstance(value, kind)
    if not ok:
        names = " or ".join("None" if k is type(None) else ("a list" if k is tuple else k.__name__) for k in allowed)
        raise DataError(f"{where}: {key} is {value!r} ({type(value).__name__}); expected {names}")


def _check_names(values: dict, where: str) -> None:
    from chexutils.data.cache import CHECKS, RESIZE_METHODS
    from chexutils.models.backbones import BACKBONES
    from chexutils.training.config import SELECT_METRICS

    choices = {
        "blank": BLANK_OPTIONS,
        "pretrained": PRETRAINED,
        "select_metric": tuple(SELECT_METRICS),
        "resize_method": tuple(RESIZE_METHODS),
        "cache_check": CHECKS,
        "backbone": tuple(sorted(BACKBONES)),
    }
    for key, known in choices.items():
        if key in values and values[key] not in known:
            raise DataError(f"{where}: {key} is {values[key]!r}; known: {', '.join(map(str, known))}")
    if "device" in values and not re.fullmatch(DEVICE_PATTERN, values["device"]):
        raise DataError(f"{where}: device is {values['device']!r}; expected auto, cpu, cuda, cuda:N or mps")
    backbone = BACKBONES.get(values.get("backbone"))
    if backbone and "image_size" in values and values["image_size"] < backbone.min_size:
        raise DataError(
            f"{where}: backbone {backbone.name} needs image_size >= {backbone.min_size}, got {values['image_size']}"
        )
    if backbone and values.get("pretrained") == "imagenet" and backbone.pretrained_file is None:
        raise DataError(f"{where}: backbone {backbone.name} has no ImageNet weights; use pretrained: null")
    if "policy" in values:
        check_policy(values["policy"], values.get("policy_options") or {}, values.get("blank", "negative"), where)


def check_policy(name: str, options: dict, blank: str, where: str) -> None:
    """The policy exists and accepts ``options`` (a U-SelfTrained teacher is only named here, read later)."""
    import inspect

    from chexutils.training.policies import POLICIES, get_policy

    if name not in POLICIES:
        raise DataError(f"{where}: policy is {name!r}; known: {', '.join(POLICIES)}")
    accepted = [p for p in inspect.signature(POLICIES[name]).parameters if p not in ("blank", "teacher_predictions")]
    unknown = [k for k in options if k not in accepted]
    if unknown:
        raise DataError(
            f"{where}: policy {name} got unknown option(s) {', '.join(unknown)}; "
            f"accepted: {', '.join(accepted) or 'none'}"
        )
    if isinstance(options.get("mapping"), str):  # a mapping file an earlier step writes: read when training starts
        return
    if "teacher" in accepted:  # the teacher run may be trained by an earlier step: only its name is checked
        if not isinstance(options.get("teacher"), str) or not options["teacher"]:
            raise DataError(f"{where}: policy {name} needs policy_options.teacher, a finished U-Ignore run folder")
        return
    try:
        get_policy(name, blank=blank, **options)
    except (KeyError, TypeError, ValueError) as err:
        raise DataError(f"{where}: {err}") from None


def check_patient_overlap(train: pd.DataFrame, valid: pd.DataFrame, train_csv, valid_csv, allowed: bool) -> None:
    """Refuse training when patients of the valid CSV are also in the training CSV (leakage), unless allowed."""
    shared = sorted(set(train["patient"]) & set(valid["patient"]))
    if shared and not allowed:
        raise DataError(
            f"{valid_csv}: {len(shared)} patient(s) also in {train_csv} (first {shared[0]}); "
            "expected disjoint patients (split with notebook 02), or set allow_patient_overlap: true"
        )
