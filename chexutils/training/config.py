"""The flat training config: every parameter of a run, commented, resolved and saved with the run."""

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from chexutils.core.errors import DataError
from chexutils.training.config_checks import check_train_values


@dataclass
class TrainConfig:
    # --- data -------------------------------------------------------------------------------
    data_dir: str = "data/phantom"  # folder holding CheXpert-v1.0-small/ (Paths resolve against it)
    train_csv: str = ""  # CSV to train on; "" = <data_dir>/CheXpert-v1.0-small/train.csv
    valid_csv: str = ""  # CSV scored every epoch; "" = the official valid.csv
    # --- labels -----------------------------------------------------------------------------
    policy: str = "U-Ones"  # uncertainty policy (chexutils.training.policies.POLICIES)
    policy_options: dict = field(default_factory=dict)  # e.g. {"teacher": run_dir} or {"mapping": {...}}
    blank: str = "negative"  # blank (not mentioned) as "negative" (the paper) or "ignore"
    # --- model ------------------------------------------------------------------------------
    backbone: str = "densenet121"  # chexutils.models.backbones.BACKBONES
    pretrained: str | None = None  # "imagenet": real weights from the torch hub cache; None: random init
    image_size: int = 224  # square side in pixels (the original study: 224 or 320; xception >= 299)
    # --- optimisation (the original study's recipe) ---------------------------------------------------
    epochs: int = 6
    batch_size: int = 0  # 0 = the original study's choice: 32 at <= 224 px, 16 above
    lr: float = 1e-4  # Adam
    betas: tuple = (0.9, 0.999)
    weight_decay: float = 0.0
    lr_step_epochs: int = 2  # lr x lr_gamma every lr_step_epochs epochs
    lr_gamma: float = 0.1
    # --- run ---------------------------------------------------------------------------------
    run_dir: str = "output/scratch/run"  # config.json, history.csv, checkpoint.pt, best.pt land here
    seed: int = 0  # model init, shuffling, label smoothing
    select_metric: str = "valid_auroc_tasks"  # best.pt by this history column: valid_auroc_tasks or valid_loss
    max_steps_per_epoch: int = 0  # > 0 caps an epoch (smoke tests); 0 = whole epoch
    predict_train: bool = False  # also write predictions_train.csv (a U-SelfTrained teacher needs it)
    # --- data path and device ---------------------------------------------------------------
    use_cache: bool = True  # read pre-resized uint8 batches from the image cache
    cache_dir: str = ""  # where caches live (one per image list x size x method);
    # "" = <data_dir>/cache, shared by every sweep and run on that data set
    resize_method: str = "bilinear"
    cache_check: str = "stat"  # how a changed image is noticed: "stat" (size + mtime) or "content" (hash)
    workers: int = 0  # loader worker processes (0 = main process + prefetch thread)
    device: str = "auto"  # "auto" = cuda if available, else cpu
    amp: bool = True  # bf16 autocast on CUDA; no-op on CPU
    channels_last: bool = True  # channels-last memory format on CUDA; no-op on CPU
    # --- speed and scale-out (README "Scaling out") ---------------------------------------------
    loss_sync_every: int = 50  # the loss is summed on the device and read (host sync) every k steps
    # and at the epoch's end; the NaN check runs there; 1 = every step
    adam_impl: str = "auto"  # "auto" (fused on CUDA, torch's default elsewhere), "fused", "foreach",
    # or "for-loop"
    drop_last: bool = False  # drop the ragged last training batch (stable shapes for cudnn / compile)
    compile: bool = False  # torch.compile the training model (off until measured: benchmarks.data_path --gpu)
    lr_scale_rule: str = "none"  # "linear" or "sqrt": lr x (batch_size / base_batch_size) [^0.5] (Goyal 2017)
    base_batch_size: int = 0  # the batch `lr` was tuned for; 0 = the original study's (32 at <= 224 px, 16 above)
    cache_on_device: bool | None = None  # whole uint8 cache in device memory; None = on CUDA when it fits
    # in half the free memory
    nproc_per_node: int = 1  # > 1: the notebook and the runner launch the run under torchrun (DDP)
    allow_patient_overlap: bool = False  # True: train even when valid_csv shares patients with train_csv (leakage)

    def resolved(self) -> "TrainConfig":
        """A copy with derived defaults filled in (what config.json records)."""
        batch = self.batch_size or original_batch_size(self.image_size)
        options = dict(self.policy_options)
        if self.policy == "mixed" and isinstance(options.get("mapping"), (str, Path)):
            from chexutils.training.policies import (
                read_mapping,  # the file's mapping itself is recorded, so resume sees a change
            )

            options["mapping"] = read_mapping(options["mapping"])
        return dataclasses.replace(
            self,
            batch_size=batch,
            betas=tuple(self.betas),
            policy_options=options,
            cache_dir=self.cache_dir or str(Path(self.data_dir) / "cache"),
        )


def original_batch_size(image_size: int) -> int:
    """The original study's batch size: 32 at <= 224 px, 16 above."""
    return 32 if image_size <= 224 else 16


LR_SCALE_RULES = {"none": 0.0, "linear": 1.0, "sqrt": 0.5}  # exponent of batch_size / base_batch_size
ADAM_IMPLS = ("auto", "fused", "foreach", "for-loop")


def effective_lr(cfg: TrainConfig) -> float:
    """The learning rate the optimiser gets: ``lr`` scaled by the batch ratio under ``lr_scale_rule``.

    "linear" is Goyal et al. 2017 (arXiv:1706.02677): k times the batch, k times the lr; "sqrt" is the
    gentler square-root rule often used with Adam. The ratio is to ``base_batch_size`` (0: the original
    study's batch).
    """
    base = cfg.base_batch_size or original_batch_size(cfg.image_size)
    return cfg.lr * (cfg.batch_size / base) ** LR_SCALE_RULES[cfg.lr_scale_rule]


FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}
SELECT_METRICS = {"valid_auroc_tasks": 1.0, "valid_loss": -1.0}  # sign that makes higher better
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


def make_config(source=None, **overrides) -> TrainConfig:
    """Build a config from a YAML file (or a dict) plus keyword overrides; unknown keys fail loudly."""
    values = {}
    if isinstance(source, (str, Path)):
        path = Path(source)
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            raise DataError(f"{path}: cannot read the training config ({err})") from None
        values = values.get("train", values)
        where = str(path)
    else:
        values, where = dict(source or {}), "training config"
    values.update(overrides)
    unknown = set(values) - FIELDS
    if unknown:
        raise DataError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(FIELDS))}")
    if values.get("select_metric", "valid_auroc_tasks") not in SELECT_METRICS:
        raise DataError(f"{where}: select_metric {values['select_metric']!r} is not one of {', '.join(SELECT_METRICS)}")
    check_train_values({**dataclasses.asdict(TrainConfig()), **values}, where)  # types, ranges, names: before any work
    for key, allowed in (("lr_scale_rule", LR_SCALE_RULES), ("adam_impl", ADAM_IMPLS)):
        if key in values and values[key] not in allowed:
            raise DataError(f"{where}: {key} {values[key]!r} is not one of {', '.join(allowed)}")
    if int(values.get("nproc_per_node", 1)) < 1 or int(values.get("loss_sync_every", 1)) < 1:
        raise DataError(f"{where}: nproc_per_node and loss_sync_every must be at least 1")
    return TrainConfig(**values).resolved()


PATH_FIELDS = {"data_dir", "train_csv", "valid_csv"}  # compared as resolved paths on resume


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
        from chexutils.core import paths

        return os.path.normpath(paths.resolve(value))
    return _plain(value)


def _plain(value):
    return list(value) if isinstance(value, tuple) else value
