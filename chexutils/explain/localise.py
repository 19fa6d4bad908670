"""Score heatmaps against the phantom's drawn sign regions, the way CheXlocalize does.

Per image and observation (Saporta et al. 2022, "Benchmarking saliency methods for chest X-ray
interpretation", Nature Machine Intelligence 4:867):

* **IoU**: the heatmap, resized to the image, is min-max normalised to [0, 1] and thresholded at
  ``THRESHOLD`` = 0.5 (pixels >= 0.5 are "the model's region"); IoU with the drawn region.
  CheXlocalize tuned one threshold per pathology on its validation set; we keep one fixed,
  stated threshold so nothing is fitted on the images being scored.
* **hit** (CheXlocalize's "hit rate", the pointing game): the heatmap's maximum pixel lies inside
  the region (on a flat-topped maximum, the top pixel nearest the top's centroid: ``peak``).
  A constant heatmap (e.g. all zero after Grad-CAM's ReLU) points nowhere: IoU 0, miss.
* **chance**: the hit rate of a uniformly random pixel, i.e. the region's share of the image.

Per observation: mean IoU with a percentile bootstrap CI over images, hit rate with a Wilson CI
(``scipy.stats.binomtest``), and mean chance. Rows are scored per region kind (clear, faint,
mimic): a model that looks at a mimic's region is being fooled by the look-alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from chexutils.core.io import write_table
from chexutils.core.labels import OBSERVATIONS
from chexutils.core.rundir import RunDir
from chexutils.data.chexpert import read_image
from chexutils.explain.heatmaps import heatmaps_for, overlay, resize_heatmap
from chexutils.phantom.regions import Regions, read_regions
from chexutils.scoring.predict import load_run_model
from chexutils.scoring.stats import wilson_interval

THRESHOLD = 0.5
SCORE_COLUMNS = ["observation", "kind", "n", "iou", "iou_lo", "iou_hi", "hit_rate", "hit_lo", "hit_hi", "chance"]


def normalise(heatmap: np.ndarray) -> np.ndarray:
    """Min-max scale to [0, 1]; a constant map becomes all zeros."""
    heatmap = np.asarray(heatmap, np.float32)
    lo, hi = float(heatmap.min()), float(heatmap.max())
    return np.zeros_like(heatmap) if hi - lo <= 1e-12 else (heatmap - lo) / (hi - lo)


def localise_one(heatmap: np.ndarray, region: np.ndarray, threshold: float = THRESHOLD) -> dict:
    """IoU, hit and chance of one heatmap (any size; stretched to the region's) against one region mask."""
    region = np.asarray(region, bool)
    if heatmap.shape != region.shape:
        heatmap = resize_heatmap(heatmap, region.shape)
    heat = normalise(heatmap)
    chance = float(region.mean())
    if heat.max() <= 0:  # constant: no localisation
        return {"iou": 0.0, "hit": False, "chance": chance}
    predicted = heat >= threshold
    union = np.logical_or(predicted, region).sum()
    iou = float(np.logical_and(predicted, region).sum() / union) if union else 0.0
    return {"iou": iou, "hit": bool(region[peak(heat)]), "chance": chance}


def peak(heat: np.ndarray) -> tuple[int, int]:
    """(row, col) of the maximum; on a plateau (an upsampled coarse map has flat tops) the plateau
    pixel nearest its centroid, not the first in scan order (which would always be its top-left)."""
    top = np.argwhere(heat >= heat.max() - 1e-6)
    if len(top) == 1:
        return int(top[0, 0]), int(top[0, 1])
    nearest = top[np.argmin(((top - top.mean(axis=0)) ** 2).sum(axis=1))]
    return int(nearest[0]), int(nearest[1])


def localise_images(
    heatmaps: np.ndarray,
    paths: Sequence[str],
    observations: Sequence[str],
    regions: Regions,
    threshold: float = THRESHOLD,
) -> pd.DataFrame:
    """Per-image scores: one row per (Path, observation) that has a drawn region.

    ``heatmaps`` is (N, K, h, w) in the order of ``paths`` (N image Paths, the sidecar's keys) and
    ``observations`` (K names), as ``heatmaps.grad_cam`` returns them.
    """
    heatmaps = np.asarray(heatmaps)
    if heatmaps.shape[:2] != (len(paths), len(observations)):
        raise ValueError(f"heatmaps have shape {heatmaps.shape}; expected ({len(paths)}, {len(observations)}, h, w)")
    rows = []
    for path, per_obs in zip(paths, heatmaps):
        for obs, heat in zip(observations, per_obs):
            mask = regions.mask(path, obs)
            if mask is None or not mask.any():
                continue
            rows.append(
                {
                    "Path": path,
                    "observation": obs,
                    "kind": regions.kind(path, obs),
                    **localise_one(heat, mask, threshold),
                }
            )
    return pd.DataFrame(rows, columns=["Path", "observation", "kind", "iou", "hit", "chance"])


def summarise(
    per_image: pd.DataFrame, n_resamples: int = 1000, seed: int = 0, level: float = 0.95, by_kind: bool = True
) -> pd.DataFrame:
    """Per observation (and kind): n, mean IoU with bootstrap CI, hit rate with Wilson CI, chance."""
    keys = ["observation", "kind"] if by_kind else ["observation"]
    rng = np.random.default_rng(seed)
    rows = []
    for key, group in per_image.groupby(keys, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        iou = group["iou"].to_numpy(float)
        n, hits = len(group), int(group["hit"].sum())
        means = iou[rng.integers(0, n, size=(n_resamples, n))].mean(axis=1)
        alpha = (1 - level) / 2
        hit_lo, hit_hi = wilson_interval(hits, n, level)
        row = dict(zip(keys, key))
        row.setdefault("kind", "all")
        rows.append(
            {
                **row,
                "n": n,
                "iou": float(iou.mean()),
                "iou_lo": float(np.quantile(means, alpha)),
                "iou_hi": float(np.quantile(means, 1 - alpha)),
                "hit_rate": hits / n,
                "hit_lo": hit_lo,
                "hit_hi": hit_hi,
                "chance": float(group["chance"].mean()),
            }
        )
    return pd.DataFrame(rows, columns=SCORE_COLUMNS)


def score_localisation(
    heatmaps: np.ndarray,
    paths: Sequence[str],
    observations: Sequence[str],
    regions: Regions,
    threshold: float = THRESHOLD,
    n_resamples: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """``localise_images`` then ``summarise``: the per-observation, per-kind table with CIs."""
    return summarise(localise_images(heatmaps, paths, observations, regions, threshold), n_resamples, seed)


def format_scores(table: pd.DataFrame) -> pd.DataFrame:
    """Readable columns: 'IoU (95% CI)', 'hit rate (95% CI)', 'chance' per observation and kind."""
    out = table[["observation", "kind", "n"]].copy()
    out["IoU (95% CI)"] = [f"{r.iou:.2f} ({r.iou_lo:.2f}-{r.iou_hi:.2f})" for r in table.itertuples()]
    out["hit rate (95% CI)"] = [f"{r.hit_rate:.2f} ({r.hit_lo:.2f}-{r.hit_hi:.2f})" for r in table.itertuples()]
    out["chance"] = table["chance"].round(3)
    return out


def localise_run(
    run_or_model,
    chexpert_dir,
    images=None,
    observations: Sequence[str] | None = None,
    max_images: int | None = None,
    seed: int = 0,
    image_size: int | None = None,
    n_resamples: int = 1000,
    chunk: int = 64,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Heatmaps of a run (or model) scored against a phantom's regions: (per-image rows, summary table).

    ``images``: CheXpert Paths (or a frame with Path) to consider, default every image with a drawn
    region; only those with a region are scored, at most ``max_images`` of them (a seeded sample).
    ``observations``: default every observation that has a region among them.
    """
    chexpert_dir = Path(chexpert_dir)
    regions = read_regions(chexpert_dir)
    if images is None:
        candidates = list(regions.images)
    else:
        candidates = list(images["Path"]) if isinstance(images, pd.DataFrame) else [str(p) for p in images]
    chosen = [p for p in candidates if regions.images.get(p)]
    if max_images is not None and len(chosen) > max_images:
        picked = np.random.default_rng(seed).choice(len(chosen), size=max_images, replace=False)
        chosen = [chosen[i] for i in sorted(picked)]
    present = {o for p in chosen for o in regions.images[p]}
    names = [o for o in OBSERVATIONS if o in present] if observations is None else list(observations)
    if not isinstance(run_or_model, torch.nn.Module):
        model, config = load_run_model(run_or_model)
        run_or_model, image_size = model, image_size or config["image_size"]
    parts = []
    for start in range(0, len(chosen), chunk):
        batch = chosen[start : start + chunk]
        maps = heatmaps_for(run_or_model, batch, names, root=chexpert_dir.parent, image_size=image_size)
        parts.append(localise_images(maps, batch, names, regions))
    per_image = (
        pd.concat(parts, ignore_index=True)
        if parts
        else localise_images(np.zeros((0, len(names), 1, 1)), [], names, regions)
    )
    return per_image, summarise(per_image, n_resamples, seed)


def gallery(
    model, chexpert_dir, per_image: pd.DataFrame, image_size: int, per_row: int = 4, kind: str = "clear", path=None
):
    """Figure: one row per observation, ``per_row`` scored images (``kind`` regions) with the heatmap
    overlaid and the drawn region outlined in white; titles give hit and IoU. Saved to ``path`` if given."""

    chexpert_dir = Path(chexpert_dir)
    regions = read_regions(chexpert_dir)
    picked = per_image[per_image["kind"] == kind].groupby("observation", sort=False).head(per_row)
    names = [o for o in OBSERVATIONS if o in set(picked["observation"])]
    fig, axes = plt.subplots(
        max(len(names), 1), per_row, figsize=(2.2 * per_row, 2.1 * max(len(names), 1)), squeeze=False
    )
    for ax in axes.flat:
        ax.axis("off")
    shown = list(dict.fromkeys(picked["Path"]))  # each image once: one trunk forward explains every observation
    maps = heatmaps_for(model, shown, names, root=chexpert_dir.parent, image_size=image_size) if shown else None
    for r, obs in enumerate(names):
        rows = picked[picked["observation"] == obs]
        for c, row in enumerate(rows.itertuples()):
            ax = axes[r, c]
            ax.imshow(overlay(read_image(chexpert_dir.parent / row.Path), maps[shown.index(row.Path), r]))
            ax.contour(regions.mask(row.Path, obs), levels=[0.5], colors="white", linewidths=0.8)
            ax.set_title(f"{'hit' if row.hit else 'miss'}, IoU {row.iou:.2f}", fontsize=8)
        axes[r, 0].text(
            -0.08, 0.5, obs, transform=axes[r, 0].transAxes, rotation=90, ha="right", va="center", fontsize=8
        )
    fig.suptitle(f"Grad-CAM heatmaps with the phantom's drawn region ({kind} signs) outlined", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    return fig


def write_scores(per_image: pd.DataFrame, table: pd.DataFrame, run_dir) -> tuple[Path, Path]:
    """``localisation.csv`` (per observation and kind, with CIs) and ``localisation_images.csv`` in ``run_dir``."""
    run_dir = Path(run_dir)
    run = RunDir(run_dir)
    return (
        write_table(table, run.localisation, index=False, float_format="%.4f"),
        write_table(per_image, run.localisation_images, index=False, float_format="%.4f"),
    )
