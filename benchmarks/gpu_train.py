"""End-to-end GPU check: DenseNet121 trained through chexutils.training.train on a phantom at 390x320.

    python benchmarks/gpu_train.py [--patients 700] [--size 224] [--batch 64] [--epochs 2] [--fast-batch 128]

Exercises the CUDA path of the real training loop (bf16 autocast, channels_last, pinned cached
batches, cudnn.benchmark; the fast variant adds the cache in GPU memory, device-side loss sums,
fused Adam and drop_last) and prints history.csv, whose images_per_s is the loop's throughput:
epoch 1 against the later ones shows the one-off warm-up cost.
"""

import argparse
import tempfile
from pathlib import Path

import pandas as pd
import torch

from chexutils.phantom.generate import generate_phantom
from chexutils.training.config import make_config
from chexutils.training.train import fit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--patients", type=int, default=700)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--fast-batch", type=int, default=128, help="batch of the fast variant (lr scaled linearly)")
    parser.add_argument("--variants", nargs="*", help="fp32, bf16+channels_last, 'fast bN' (default: all)")
    parser.add_argument("--work", default=None, help="folder for phantom, cache and run (default: a temp folder)")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp())
    generate_phantom(work / "data", patients=args.patients, valid_patients=100, size=(390, 320))
    variants = {
        "fp32": dict(amp=False, channels_last=False, batch_size=args.batch),
        "bf16+channels_last": dict(batch_size=args.batch),
        # issue 14's loop: whole cache in GPU memory, no per-step sync, fused Adam, stable shapes
        f"fast b{args.fast_batch}": dict(
            batch_size=args.fast_batch, drop_last=True, lr_scale_rule="linear", base_batch_size=args.batch
        ),
    }
    for name in args.variants or variants:
        cfg = make_config(
            data_dir=str(work / "data"),
            image_size=args.size,
            epochs=args.epochs,
            lr=1e-3,
            device="cuda" if torch.cuda.is_available() else "cpu",
            run_dir=str(work / f"run-{name}"),
            cache_dir=str(work / "cache"),
            **variants[name],
        )
        run = fit(cfg)
        print(f"{name}:")
        print(pd.read_csv(run / "history.csv").to_string(index=False), flush=True)


if __name__ == "__main__":
    main()
