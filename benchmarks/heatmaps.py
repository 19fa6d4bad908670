"""CPU time per image of Grad-CAM heatmaps for all 14 observations (and of writing overlay PNGs).

    python benchmarks/heatmaps.py [--sizes 64 224] [--batch 16] [--images 16] [--backbones ...]

Random-weight models (timing does not depend on the weights), random uint8 images, both heads.
Xception needs >= 299 px, so it is timed at 299 whatever --sizes says. Prints one line per
backbone x head x size: seconds per image (wall-clock and process CPU) for the heatmaps of all 14
observations, and for one.
The load average is printed too: on a shared machine the figures scale with it.
"""

import argparse
import os
import tempfile
import time

import numpy as np
import torch

from chexutils.explain.heatmaps import grad_cam, write_heatmaps
from chexutils.models.backbones import build_model


def time_call(fn, repeats: int = 2) -> tuple[float, float]:
    """Best of ``repeats`` (wall-clock, process CPU) seconds, after one warm-up call."""
    fn()
    best = (float("inf"), float("inf"))
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        best = min(best, (time.perf_counter() - wall, time.process_time() - cpu))
    return best


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 224])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--backbones", nargs="+", default=["densenet121", "fractalnet", "xception"])
    parser.add_argument("--heads", nargs="+", default=["binary", "multiclass"])
    parser.add_argument("--png", action="store_true", help="also time write_heatmaps (PNG overlays, 14 per image)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average "
        f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}, {os.cpu_count()} CPUs"
    )
    print("seconds per image, wall-clock / process CPU")
    print(f"{'backbone':<12} {'head':<10} {'size':>4}  {'14 observations':>17}  {'1 observation':>15}")
    rng = torch.Generator().manual_seed(0)
    for backbone in args.backbones:
        for head in args.heads:
            torch.manual_seed(0)
            model = build_model(backbone, head).eval()
            sizes = [299] if backbone == "xception" else args.sizes
            for size in sizes:
                images = torch.randint(0, 256, (args.images, 1, size, size), dtype=torch.uint8, generator=rng)
                all_obs = time_call(lambda: grad_cam(model, images, None, args.batch), repeats=1)
                one = time_call(lambda: grad_cam(model, images, ["Edema"], args.batch), repeats=1)
                cells = [f"{w / args.images:.3f} / {c / args.images:.3f}" for w, c in (all_obs, one)]
                print(f"{backbone:<12} {head:<10} {size:>4}  {cells[0]:>17}  {cells[1]:>15}", flush=True)
    if args.png:
        from PIL import Image

        with tempfile.TemporaryDirectory() as tmp:
            files = []
            for i in range(args.images):
                files.append(os.path.join(tmp, f"img{i}.png"))
                Image.fromarray(np.random.default_rng(i).integers(0, 255, (320, 390), np.uint8), mode="L").save(
                    files[-1]
                )
            model = build_model("densenet121", "binary").eval()
            for size in args.sizes:
                wall, cpu = time_call(
                    lambda: write_heatmaps(
                        model, files, os.path.join(tmp, "out"), image_size=size, batch_size=args.batch
                    ),
                    repeats=1,
                )
                print(
                    f"write_heatmaps densenet121 {size} px, 14 PNGs per 390x320 image: "
                    f"{wall / args.images:.3f} / {cpu / args.images:.3f} s/img",
                    flush=True,
                )


if __name__ == "__main__":
    main()
