"""The flat training config: every parameter of a run, commented, resolved and saved with the run.

The one home of the config and every check of it: ``make_config`` (the CLI, notebook 03) and the
runner's pre-flight (every grid point of a sweep at load time) both call ``check_train_values``,
so a bad value (type, range, unknown name, bad combination) is refused before any work.
"""

import dataclasses
import inspect
import math
import re
import types
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from chexutils.core.devices import DEVICE_PATTERN
from chexutils.core.errors import DataError
from chexutils.core.io import read_yaml
from chexutils.data.cache import CHECKS, GEOMETRIES, RESIZE_METHODS
from chexutils.models.backbones import PRETRAINED_CHOICES
from chexutils.models.registry import BACKBONES
from chexutils.training.losses import LOSSES, loss_refusal
from chexutils.training.policies import BLANK_OPTIONS, POLICIES, get_policy, read_mapping


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
    backbone: str = "densenet121"  # network, one of chexutils.models.backbones.BACKBONES
    pretrained: str | None = None  # "imagenet": real weights from the torch hub cache; None: random init
    image_size: int = 224  # square side in pixels (the original study: 224 or 320; xception >= 299)
    # --- optimisation (the original study's recipe) ---------------------------------------------------
    epochs: int = 6  # passes over the training CSV
    batch_size: int = 0  # 0 = the original study's choice: 32 at <= 224 px, 16 above
    lr: float = 1e-4  # learning rate (Adam)
    betas: tuple = (0.9, 0.999)  # Adam's two moment decay rates
    weight_decay: float = 0.0  # L2 penalty (Adam's weight_decay)
    lr_step_epochs: int = 2  # lr x lr_gamma every lr_step_epochs epochs
    lr_gamma: float = 0.1  # the step decay's factor
    # --- loss and fine-tuning (docs/training.md, "Losses and fine-tuning") ---------------------
    loss: str = "bce"  # chexutils.training.losses.LOSSES: "bce" (the original study's), "weighted-bce"
    # (pos_weight = negatives / positives per observation), "auc-margin" (AUC-M + PESG, Yuan et al. 2021)
    auc_margin: float = 1.0  # AUC-M margin m (the paper's 1.0); loss auc-margin only
    auc_epoch_decay: float = 2e-3  # PESG's pull towards the stage's reference point (LibAUC's epoch_decay;
    # its CheXpert example's gamma = 500 = 1 / 2e-3); loss auc-margin only. PESG uses lr, weight_decay,
    # lr_step_epochs and lr_gamma (a new stage each decay); Adam's betas and adam_impl do not apply
    auc_lr: float = 0.0  # PESG's own learning rate (SGD-like: LibAUC's CheXpert example 0.1); 0 = lr. Used by
    # loss auc-margin only and ignored by the others, so one `train` mapping serves a loss axis
    init_from: str = ""  # a run folder (trained or imported) whose best.pt starts a FRESH run; "" = none
    reinit_head: bool = False  # with init_from: a new classifier even when the source's fits (DeepAUC stage 2)
    freeze_trunk_epochs: int = 0  # the trunk (features) frozen, BatchNorm statistics held, for this many epochs
    head_lr: float = 0.0  # the classifier's own learning rate; 0 = the same as lr
    # --- recipe (docs/training.md, "Recipes"; chexutils.training.recipes) ---------------------
    recipe: str = "single"  # "single": every epoch with `loss`; "deepauc": stage1_epochs of BCE + Adam, then
    # the classifier re-initialised and `loss` (Yuan et al. 2021: BCE at lr with Adam, then auc-margin at auc_lr
    # with PESG); "hierarchical": stage1_epochs on the studies
    # with a positive parent observation, then all, children conditional on their parent (Pham et al. 2020)
    stage1_epochs: int = 0  # two-stage recipes: epochs of the first stage (1 .. epochs - 1); ignored by single
    # --- preprocessing and augmentation (docs/training.md, "Preprocessing and augmentation") ------
    geometry: str = "square"  # film -> square at cache time: "square" (stretched, the original study's), "pad"
    # (aspect kept, zero padding) or "crop" (aspect kept, centre crop) (chexutils.data.cache.GEOMETRIES)
    augment_crop: float = 1.0  # random crop on the device: side a uniform share in [augment_crop, 1], resized
    # back; 1 = off (chexutils.training.augment)
    augment_flip: float = 0.0  # probability of a random horizontal flip per training image; 0 = off
    augment_rotate: float = 0.0  # random rotation, uniform in [-augment_rotate, augment_rotate] degrees; 0 = off
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
    resize_method: str = "bilinear"  # how images are resized to image_size (chexutils.data.cache.RESIZE_METHODS)
    cache_check: str = "stat"  # how a changed image is noticed: "stat" (size + mtime) or "content" (hash)
    workers: int = 0  # loader worker processes (0 = main process + prefetch thread)
    threads: int = 1  # torch CPU threads of each training process (torch.set_num_threads), the same however
    # the run is launched (serial, --jobs N, Slurm), so a CPU run's numbers never depend on how a sweep ran
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
            options["mapping"] = read_mapping(options["mapping"])  # recorded itself, so resume sees a change
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


def make_config(source=None, **overrides) -> TrainConfig:
    """Build a config from a YAML file (or a dict) plus keyword overrides; unknown keys fail loudly."""
    values, where = given_values(source, overrides)
    unknown = set(values) - FIELDS
    if unknown:
        raise DataError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(FIELDS))}")
    check_train_values({**dataclasses.asdict(TrainConfig()), **values}, where)  # types, ranges, names: before any work
    return TrainConfig(**values).resolved()


def given_values(source=None, overrides=None) -> tuple[dict, str]:
    """The values a YAML file (or a dict) and the overrides give, before defaults; and where they came from."""
    values = {}
    if isinstance(source, (str, Path)):
        path = Path(source)
        values = read_yaml(path, "training config") or {}  # a key given twice is refused
        if isinstance(values, dict) and isinstance(values.get("train"), dict):
            values = values["train"]
        if not isinstance(values, dict):
            raise DataError(f"{path} line 1: expected a mapping of TrainConfig keys (flat, or under 'train:')")
        where = str(path)
    else:
        values, where = dict(source or {}), "training config"
    values = numbers_as_floats({**values, **(overrides or {})})
    return values, where


CPU_SIZED = {"image_size": 64, "epochs": 2}  # what `make demo` trains on 2 CPU cores (configs/demo.yaml)


def check_cpu_sized(given: dict, cuda_available: bool, where: str) -> None:
    """On the CPU, refuse to start the GPU-sized defaults (224 px, 6 epochs) that nobody asked for.

    A run that will be on the CPU (``device: cpu``, or ``auto`` without CUDA) must name ``image_size``
    and ``epochs`` itself (the defaults too, if meant); otherwise one DataError says which to set."""
    device = given.get("device", "auto")
    on_cpu = device == "cpu" or (device == "auto" and not cuda_available)
    missing = [key for key in CPU_SIZED if key not in given]
    if on_cpu and missing:
        defaults = dataclasses.asdict(TrainConfig())
        shown = " ".join(f"{key}={defaults[key]}" for key in missing)
        raise DataError(
            f"{where}: no GPU here (device {device}) and {' and '.join(missing)} not given: the defaults "
            f"({shown}) are sized for a GPU and take hours on a CPU; set them, e.g. "
            f"--set {' '.join(f'{key}={value}' for key, value in CPU_SIZED.items())} (what make demo trains), "
            f"or give {shown} to keep the defaults"
        )


FLOAT_FIELDS = {f.name for f in dataclasses.fields(TrainConfig) if f.type is float}
NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def numbers_as_floats(values: dict) -> dict:
    """A copy with numeric text in float fields (and betas) as floats: YAML 1.1, which PyYAML follows,
    reads ``1e-3`` (no dot) as the string '1e-3', though every user means the number."""

    def number(value):
        return float(value) if isinstance(value, str) and NUMBER.fullmatch(value.strip()) else value

    out = dict(values)
    for key in FLOAT_FIELDS & set(out):
        out[key] = number(out[key])
    if isinstance(out.get("betas"), (list, tuple)):
        out["betas"] = type(out["betas"])(number(b) for b in out["betas"])
    return out


# --- checks: types, ranges, names, combinations, leakage -------------------------------------

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
    "threads": (1, True),
    "nproc_per_node": (1, True),
    "loss_sync_every": (1, True),
    "freeze_trunk_epochs": (0, True),
    "head_lr": (0, True),
    "auc_margin": (0, False),
    "auc_epoch_decay": (0, True),
    "stage1_epochs": (0, True),
    "auc_lr": (0, True),
    "augment_crop": (0, False),
    "augment_flip": (0, True),
    "augment_rotate": (0, True),
}
UPPER_BOUNDS = {"augment_crop": 1.0, "augment_flip": 1.0, "augment_rotate": 45.0}  # highest allowed (inclusive)
RECIPE_NAMES = ("single", "deepauc", "hierarchical")  # chexutils.training.recipes.RECIPES describes each
AUC_ONLY = ("auc_margin", "auc_epoch_decay")  # fields that mean something under loss auc-margin only


def check_train_values(values: dict, where: str) -> None:
    """Every given TrainConfig value has its field's type and range, and the names exist; else a DataError.

    Numeric text in a float field ('1e-3', as YAML reads it) counts as the number (``numbers_as_floats``)."""
    values = numbers_as_floats(values)
    fields = {f.name: f.type for f in dataclasses.fields(TrainConfig)}
    for key, value in values.items():
        if key in fields:
            _check_type(key, value, fields[key], where)
    for key, (low, inclusive) in LOWER_BOUNDS.items():
        value = values.get(key)
        if value is not None and (value < low if inclusive else value <= low):
            raise DataError(f"{where}: {key} is {value!r}; expected a number {'>=' if inclusive else '>'} {low}")
    for key, high in UPPER_BOUNDS.items():
        if values.get(key) is not None and values[key] > high:
            raise DataError(f"{where}: {key} is {values[key]!r}; expected a number <= {high:g}")
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
    choices = {
        "blank": BLANK_OPTIONS,
        "pretrained": PRETRAINED_CHOICES,
        "lr_scale_rule": tuple(LR_SCALE_RULES),
        "adam_impl": ADAM_IMPLS,
        "select_metric": tuple(SELECT_METRICS),
        "resize_method": tuple(RESIZE_METHODS),
        "cache_check": CHECKS,
        "backbone": tuple(sorted(BACKBONES)),
        "recipe": RECIPE_NAMES,
        "geometry": GEOMETRIES,
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
    check_loss_and_start(values, where)
    check_recipe(values, where)


def check_recipe(values: dict, where: str) -> None:
    """A two-stage recipe has 1 .. epochs - 1 first-stage epochs; its fields are refused elsewhere."""
    recipe, first = values.get("recipe", "single"), values.get("stage1_epochs", 0)
    epochs = values.get("epochs", TrainConfig.epochs)
    if recipe == "single":  # stage1_epochs is ignored, so one `train` mapping serves a recipe axis
        return
    if not 1 <= first < epochs:
        raise DataError(
            f"{where}: recipe {recipe} needs stage1_epochs between 1 and epochs - 1 ({epochs - 1}), got {first}"
        )
    if recipe == "hierarchical":
        policy = POLICIES.get(values.get("policy"))
        if policy is not None and policy.head != "binary":
            raise DataError(
                f"{where}: recipe hierarchical needs a binary-head policy (P(child | parent) is one sigmoid); "
                f"{values['policy']} has a {policy.head} head"
            )
    if recipe == "deepauc" and values.get("loss", "bce") == "bce":
        raise DataError(f"{where}: recipe deepauc trains BCE first, then `loss`; set loss (e.g. auc-margin)")


def check_loss_and_start(values: dict, where: str) -> None:
    """The loss exists and accepts the policy; the fine-tuning fields make sense together."""
    loss = values.get("loss", "bce")
    if loss not in LOSSES:
        raise DataError(f"{where}: loss is {loss!r}; known: {', '.join(LOSSES)}")
    policy = POLICIES.get(values.get("policy"))
    reason = loss_refusal(loss, policy.head) if policy else ""
    if reason:
        raise DataError(f"{where}: loss {loss} does not accept policy {values['policy']}: {reason}")
    defaults = TrainConfig()
    if loss != "auc-margin":
        changed = [k for k in AUC_ONLY if k in values and values[k] != getattr(defaults, k)]
        if changed:
            raise DataError(
                f"{where}: {', '.join(changed)} set, but loss is {loss}; they apply to loss auc-margin only"
            )
    if values.get("reinit_head") and not values.get("init_from"):
        raise DataError(f"{where}: reinit_head is true without init_from; it re-initialises the head of a loaded run")
    if values.get("freeze_trunk_epochs") and values.get("nproc_per_node", 1) > 1:
        raise DataError(
            f"{where}: freeze_trunk_epochs with nproc_per_node > 1 is not supported "
            "(DistributedDataParallel would need the frozen parameters declared); train it on one process"
        )


def check_policy(name: str, options: dict, blank: str, where: str) -> None:
    """The policy exists and accepts ``options`` (a U-SelfTrained teacher is only named here, read later)."""
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
