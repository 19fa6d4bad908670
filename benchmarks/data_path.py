"""Loader and training-step benchmark: the usual CheXpert loader against this project's data path.

    python -m benchmarks.data_path                  # CPU: loaders (a) (b) (c), data-wait share of a train step
    python -m benchmarks.data_path --gpu            # also DenseNet121 training settings on the GPU (benchmarks.gpu_step)
    python -m benchmarks.data_path --gpu --gpu-only # only the GPU table: img/s per setting, projected epoch times

(a) the usual loader: PIL open, convert RGB, torchvision Resize, ToTensor, Normalize, DataLoader;
(b) this project's loader without the cache: decode + resize to uint8 per image;
(c) with the cache: whole uint8 batches from the memory map.
(b) and (c) hand uint8 batches to the model, which converts and normalises them on its device;
``normalise_on_cpu`` shows that per-batch step's cost when the device is this CPU.
Prints a table and writes ``<out>/bench.json``. A benchmark: it prints figures and asserts nothing.
"""

import argparse
import platform
import time

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from benchmarks.gpu_step import gpu_settings_table
from chexutils.core import paths
from chexutils.core.devices import autocast
from chexutils.core.io import write_json
from chexutils.data.cache import open_cache
from chexutils.data.chexpert import read_chexpert
from chexutils.data.loader import BatchLoader, ResizedImages
from chexutils.models.backbones import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    build_model,
    imagenet_constants,
    normalise_images,
)
from chexutils.phantom.generate import generate_phantom
from chexutils.training.losses import masked_loss

REAL_SMALL_SIZE = (390, 320)  # the small release's image size (W, H)


class UsualChexpertImages(Dataset):
    """What public CheXpert code does per item, every epoch."""

    def __init__(self, image_paths, size: int):
        self.paths = list(image_paths)
        self.transform = transforms.Compose(
            [transforms.Resize((size, size)), transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
        )

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return self.transform(Image.open(self.paths[i]).convert("RGB")), i


def images_per_second(batches, device="cpu", normalise: bool = True) -> float:
    """Drain an iterable of (images, rows) once; images per second (optionally normalising each batch)."""
    mean, std = imagenet_constants(device)
    start, count = time.perf_counter(), 0
    for images, _ in batches:
        if normalise:
            normalise_images(images, mean, std)
        count += len(images)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return count / (time.perf_counter() - start)


def loader_table(frame, size: int, batch: int, cache_root) -> dict:
    """images/s of (a), (b), (c) with 0 and 2 workers, and the cache's one-off build time."""
    start = time.perf_counter()
    cache = open_cache(frame, size, cache_root)
    build_seconds = time.perf_counter() - start
    results = {"cache_build_s": build_seconds}
    for workers in (0, 2):
        usual = DataLoader(UsualChexpertImages(frame["image"], size), batch_size=batch, num_workers=workers)
        results[f"a_usual_w{workers}"] = images_per_second(usual, normalise=False)
        results[f"b_nocache_w{workers}"] = images_per_second(
            BatchLoader(ResizedImages(frame["image"], size), batch, shuffle=True, workers=workers), normalise=False
        )
        results[f"c_cache_w{workers}"] = images_per_second(
            BatchLoader(cache, batch, shuffle=True, workers=workers), normalise=False
        )
    # (b) and (c) deliver uint8 batches; their normalisation runs on the training device. Its cost on
    # this CPU is shown on its own, so a CPU-only trainer can add it back.
    results["normalise_on_cpu"] = images_per_second(BatchLoader(cache, batch), normalise=True)
    best = lambda kind: max(v for k, v in results.items() if k.startswith(kind))
    results["ratio_c_over_a"] = best("c_") / best("a_")
    return results


def data_wait_share(loader, model, device, steps: int, amp: bool = False) -> dict:
    """Train ``steps`` steps; the share of wall time spent waiting for the next batch."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    waited, total, iterator = 0.0, time.perf_counter(), iter(loader)
    for step in range(steps + 1):
        if step == 1:  # the first step warms up; time the rest
            waited, total = 0.0, time.perf_counter()
        t0 = time.perf_counter()
        images, rows = next(iterator)
        waited += time.perf_counter() - t0
        with autocast(device, amp):
            logits = model(images.to(device, non_blocking=True))
        loss = masked_loss(
            logits.float(),
            torch.zeros(len(rows), 14, device=device),
            torch.ones(len(rows), 14, device=device),
            "binary",
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - total
    return {"steps": steps, "step_s": elapsed / steps, "wait_share": waited / elapsed}


def backbone_speeds(sizes: dict, batch: int, steps: int, device) -> list[dict]:
    """Training images/s of each backbone on synthetic uint8 batches, at each of its sizes."""
    rows = []
    for backbone, backbone_sizes in sizes.items():
        for size in backbone_sizes:
            model = build_model(backbone).to(device)
            synthetic = [(torch.randint(0, 256, (batch, 1, size, size), dtype=torch.uint8), torch.arange(batch))] * (
                steps + 1
            )
            timed = data_wait_share(iter(synthetic), model, device, steps)
            rows.append({"backbone": backbone, "size": size, "batch": batch, "train_img_s": batch / timed["step_s"]})
            print(f"  {backbone:12s} {size:4d}px  {rows[-1]['train_img_s']:8.1f} train img/s", flush=True)
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.data_path", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", help="folder holding CheXpert-v1.0-small/ (default: a phantom at 390x320)")
    parser.add_argument("--images", type=int, default=1024, help="images to read (default 1024)")
    parser.add_argument("--size", type=int, default=224, help="square side the loaders resize to")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--train-size", type=int, default=64, help="CPU train-step image size (default 64)")
    parser.add_argument("--steps", type=int, default=5, help="timed train steps")
    parser.add_argument("--gpu", action="store_true", help="also the DenseNet121 GPU settings at 224 and 320")
    parser.add_argument("--gpu-only", action="store_true", help="with --gpu: skip the CPU loader and step tables")
    parser.add_argument(
        "--gpu-budget", type=float, default=300, help="seconds after which the remaining GPU settings are skipped"
    )
    parser.add_argument(
        "--backbones",
        action="store_true",
        help="also CPU training images/s per backbone at --train-size and 224 (xception: 320)",
    )
    parser.add_argument("--out", default="output/bench")
    args = parser.parse_args(argv)
    out = paths.resolve(args.out)
    if args.gpu and args.gpu_only:
        return _gpu_only(out, args.gpu_budget)
    if args.data:
        chexpert_dir = paths.find_chexpert(args.data)
    else:
        patients = max(20, int(args.images / 3.2) + 10)
        chexpert_dir = generate_phantom(
            out / f"phantom-{patients}", patients=patients, valid_patients=20, size=REAL_SMALL_SIZE
        )
    frame = read_chexpert(chexpert_dir / "train.csv").head(args.images)
    report = {
        "machine": {
            "cpus": torch.get_num_threads(),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        },
        "data": str(chexpert_dir),
        "images": len(frame),
        "size": args.size,
        "batch": args.batch,
    }
    report["loaders"] = loader_table(frame, args.size, args.batch, out / "cache")
    print(f"loader images/s at {args.size}px, batch {args.batch}, {len(frame)} images from {chexpert_dir}")
    for key, value in report["loaders"].items():
        print(f"  {key:18s} {value:12.1f}")
    cpu = torch.device("cpu")
    train_cache = open_cache(frame, args.train_size, out / "cache")
    model = build_model("densenet121")
    report["cpu_train_step"] = {
        "size": args.train_size,
        "cache": data_wait_share(BatchLoader(train_cache, args.batch, shuffle=True), model, cpu, args.steps),
        "usual_w2": data_wait_share(
            DataLoader(UsualChexpertImages(frame["image"], args.train_size), args.batch, shuffle=True, num_workers=2),
            model,
            cpu,
            args.steps,
        ),
    }
    for name, row in report["cpu_train_step"].items():
        if isinstance(row, dict):
            print(
                f"  CPU train step {args.train_size}px via {name}: {row['step_s']:.3f} s/step, "
                f"waiting for data {100 * row['wait_share']:.2f}%"
            )
    if args.backbones:
        print(f"CPU training speed per backbone (batch {args.batch}, synthetic batches):")
        sizes = {"densenet121": [args.train_size, 224], "fractalnet": [args.train_size, 224], "xception": [320]}
        report["cpu_backbones"] = backbone_speeds(sizes, args.batch, 2, cpu)
    if args.gpu and torch.cuda.is_available():
        print(f"GPU training step, DenseNet121 ({torch.cuda.get_device_name()}):", flush=True)
        report["gpu"] = gpu_settings_table(budget_s=args.gpu_budget)
    write_json(out / "bench.json", report)
    print(f"written: {out / 'bench.json'}")


def _gpu_only(out, budget_s: float) -> None:
    """Only the GPU settings table; bench.json is rewritten after every setting (partial results survive)."""
    if not torch.cuda.is_available():
        raise SystemExit("--gpu-only: no CUDA device here")
    report = {"machine": {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__}}
    print(f"GPU training step, DenseNet121 ({report['machine']['gpu']}, torch {torch.__version__}):", flush=True)

    def save(rows):
        write_json(out / "bench.json", {**report, "gpu": rows})

    gpu_settings_table(budget_s=budget_s, report=save)
    print(f"written: {out / 'bench.json'}")


if __name__ == "__main__":
    main()
