"""End-to-end GPU check: DenseNet121 trained through chexutils.train on a phantom at 390x320.

    python benchmarks/gpu_train.py [--patients 700] [--size 224] [--batch 64] [--epochs 2]

Exercises the CUDA path of the real training loop (bf16 autocast, channels_last, pinned cached
batches, cudnn.benchmark) and prints history.csv, whose images_per_s is the loop's throughput.
"""

import argparse
import tempfile
from pathlib import Path

import pandas as pd
import torch

from chexutils.phantom import generate_phantom
from chexutils.train import fit
from chexutils.train_config import make_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--patients", type=int, default=700)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--work", default=None, help="folder for phantom, cache and run (default: a temp folder)")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp())
    generate_phantom(work / "data", patients=args.patients, valid_patients=100, size=(390, 320))
    for amp in (False, True):
        cfg = make_config(data_dir=str(work / "data"), image_size=args.size, batch_size=args.batch, epochs=args.epochs,
                          lr=1e-3, amp=amp, channels_last=amp, device="cuda" if torch.cuda.is_available() else "cpu",
                          run_dir=str(work / f"run-amp{int(amp)}"), cache_dir=str(work / "cache"))
        run = fit(cfg)
        print(f"amp+channels_last={amp}:")
        print(pd.read_csv(run / "history.csv").to_string(index=False), flush=True)


if __name__ == "__main__":
    main()
