"""GPU training-step settings for ``python -m benchmarks.data_path --gpu``: img/s and projected epoch times.

Each setting runs the real training loop (``chexutils.training.train.train_one_epoch``) on DenseNet121 over
an in-memory uint8 cache of random images (pixel values do not change the speed): a capped warm-up
epoch (cudnn autotuning, compilation), then a capped timed epoch. The projected epoch time is
223,414 images (CheXpert-v1.0-small's train.csv) over the timed img/s; the first epoch adds the
warm-up's one-off seconds. A benchmark: it prints figures and asserts nothing.
"""

import dataclasses
import time

import numpy as np
import torch

from chexutils.data.cache import ImageCache
from chexutils.data.device_cache import maybe_on_device
from chexutils.data.loader import BatchLoader
from chexutils.models.backbones import build_model
from chexutils.training.config import effective_lr, make_config
from chexutils.training.losses import build_loss
from chexutils.training.train import LabelledImages, _adam_impl, train_one_epoch

CHEXPERT_SMALL_TRAIN_IMAGES = 223_414


@dataclasses.dataclass(frozen=True)
class Setting:
    name: str
    batch: int
    amp: bool  # bf16 autocast + channels_last
    fast: bool  # this project's loop: loss summed on the device, fused Adam, cache in GPU memory
    compile: bool = False


SETTINGS = (
    Setting("fp32, per-step sync, host cache", 32, amp=False, fast=False),
    Setting("bf16+CL, per-step sync, host cache", 32, amp=True, fast=False),
    Setting("bf16+CL, fast loop", 32, amp=True, fast=True),
    Setting("bf16+CL, fast loop", 64, amp=True, fast=True),
    Setting("bf16+CL, fast loop", 128, amp=True, fast=True),
    Setting("bf16+CL, fast loop", 256, amp=True, fast=True),
    Setting("bf16+CL, fast loop, compile", 128, amp=True, fast=True, compile=True),
)


def synthetic_cache(n: int, size: int, seed: int = 0) -> ImageCache:
    """An in-memory stand-in for a built cache: n random uint8 images of size x size."""
    images = np.random.default_rng(seed).integers(0, 256, (n, size, size), dtype=np.uint8)
    return ImageCache(folder=None, images=images, size=size, method="bilinear")


def measure(setting: Setting, cache: ImageCache, warm_steps: int, timed_steps: int, device="cuda") -> dict:
    """Warm-up epoch then timed epoch of ``train_one_epoch`` under one setting; img/s and one-off seconds."""
    device = torch.device(device)
    cuda = device.type == "cuda"
    torch.backends.cudnn.benchmark = True
    cfg = make_config(
        image_size=cache.size,
        batch_size=setting.batch,
        amp=setting.amp,
        channels_last=setting.amp,
        loss_sync_every=50 if setting.fast else 1,
        adam_impl="auto" if setting.fast else "foreach",
        drop_last=True,
        compile=setting.compile,
        cache_on_device=setting.fast,
        epochs=2,
    )
    torch.manual_seed(0)
    model = build_model("densenet121").to(device)
    if setting.amp and cuda:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=effective_lr(cfg), **_adam_impl(cfg.adam_impl, device))
    trained = torch.compile(model) if setting.compile else model
    labels = torch.from_numpy(np.random.default_rng(1).integers(0, 2, (len(cache), 14)).astype(np.float32))
    split = LabelledImages(frame=None, images=cache, values=labels, mask=torch.ones_like(labels))
    loader = BatchLoader(
        maybe_on_device(cache, device, setting.fast),
        setting.batch,
        shuffle=True,
        seed=0,
        pin_memory=cuda,
        drop_last=True,
    )
    criterion = build_loss("bce", "binary", split.values, split.mask)
    warm = train_one_epoch(
        trained,
        criterion,
        optimizer,
        loader,
        split,
        device,
        dataclasses.replace(cfg, max_steps_per_epoch=warm_steps),
        0,
        show=False,
    )
    timed = train_one_epoch(
        trained,
        criterion,
        optimizer,
        loader,
        split,
        device,
        dataclasses.replace(cfg, max_steps_per_epoch=timed_steps),
        1,
        show=False,
    )
    rate = timed["images_per_s"]
    one_off = max(0.0, warm["seconds"] - warm_steps * setting.batch / rate)
    epoch_s = CHEXPERT_SMALL_TRAIN_IMAGES / rate
    del model, trained, optimizer, loader
    if cuda:
        torch.cuda.empty_cache()
    return {
        "setting": setting.name,
        "size": cache.size,
        "batch": setting.batch,
        "img_s": rate,
        "epoch_min": epoch_s / 60,
        "first_epoch_min": (epoch_s + one_off) / 60,
        "one_off_s": one_off,
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan"),
    }


def gpu_settings_table(
    sizes=(224, 320),
    warm_steps: int = 10,
    timed_steps: int = 25,
    budget_s: float = 300,
    report=None,
    device="cuda",
    settings=SETTINGS,
) -> list[dict]:
    """Every setting at every size, in order; the rest are skipped once ``budget_s`` seconds have passed."""
    start, rows = time.perf_counter(), []
    for size in sizes:
        n = max(s.batch for s in settings) * max(warm_steps, timed_steps)
        cache = synthetic_cache(n, size)
        for setting in settings:
            if time.perf_counter() - start > budget_s:
                print(f"  skipped (time budget): {setting.name} at {size}px", flush=True)
                continue
            if torch.device(device).type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            try:
                row = measure(setting, cache, warm_steps, timed_steps, device)
            except Exception as err:  # a setting that fails (e.g. compile) is reported, the rest still run
                row = {"setting": setting.name, "size": size, "batch": setting.batch, "error": repr(err)[:300]}
            rows.append(row)
            print(format_row(row), flush=True)
            if report is not None:
                report(rows)
    return rows


def format_row(row: dict) -> str:
    head = f"  {row['size']:4d}px  b{row['batch']:<4d} {row['setting']:38s}"
    if "error" in row:
        return f"{head} failed: {row['error']}"
    return (
        f"{head} {row['img_s']:8.0f} img/s   epoch {row['epoch_min']:5.2f} min"
        f"   first epoch {row['first_epoch_min']:5.2f} min   peak {row['peak_gib']:.1f} GiB"
    )
