"""Score heatmaps against the phantom's drawn sign regions, the way CheXlocalize does.

Per image and observation (Saporta et al. 2022, "Benchmarking saliency methods for chest X-ray
interpretation", Nature Machine Intelligence 4:867):

* **IoU**: the heatmap, resized to the image, is min-max normalised to [0, 1] and thresholded at
  ``THRESHOLD`` = 0.5 (pixels >= 0.5 are "the model's region"); IoU with the drawn region.
  CheXlocalize tuned one threshold per pathology on its validation set; we keep one fixed,
  stated threshold so nothing is fitted on the images being scored.
* **hit** (CheXlocalize's "hit rate", the pointing game): the heatmap's maximum pixel lies inside
  the region. A constant heatmap (e.g. all zero after Grad-CAM's ReLU) points nowhere: IoU 0, miss.
* **chance**: the hit rate of a uniformly random pixel, i.e. the region's share of the image.

Per observation: mean IoU with a percentile bootstrap CI over images, hit rate with a Wilson CI
(``scipy.stats.binomtest``), and mean chance. Rows are scored per region kind (clear, faint,
mimic): a model that looks at a mimic's region is being fooled by the look-alike.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.stats import binomtest

from .heatmaps import resize_heatmap
from .phantom.regions import Regions

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
    hit = bool(region.flat[int(np.argmax(heat))])
    return {"iou": iou, "hit": hit, "chance": chance}


def localise_images(heatmaps: np.ndarray, paths: Sequence[str], observations: Sequence[str],
                    regions: Regions, threshold: float = THRESHOLD) -> pd.DataFrame:
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
            rows.append({"Path": path, "observation": obs, "kind": regions.kind(path, obs),
                         **localise_one(heat, mask, threshold)})
    return pd.DataFrame(rows, columns=["Path", "observation", "kind", "iou", "hit", "chance"])


def summarise(per_image: pd.DataFrame, n_resamples: int = 1000, seed: int = 0, level: float = 0.95,
              by_kind: bool = True) -> pd.DataFrame:
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
        ci = binomtest(hits, n).proportion_ci(confidence_level=level, method="wilson")
        row = dict(zip(keys, key))
        row.setdefault("kind", "all")
        rows.append({**row, "n": n, "iou": float(iou.mean()),
                     "iou_lo": float(np.quantile(means, alpha)), "iou_hi": float(np.quantile(means, 1 - alpha)),
                     "hit_rate": hits / n, "hit_lo": float(ci.low), "hit_hi": float(ci.high),
                     "chance": float(group["chance"].mean())})
    return pd.DataFrame(rows, columns=SCORE_COLUMNS)


def score_localisation(heatmaps: np.ndarray, paths: Sequence[str], observations: Sequence[str], regions: Regions,
                       threshold: float = THRESHOLD, n_resamples: int = 1000, seed: int = 0) -> pd.DataFrame:
    """``localise_images`` then ``summarise``: the per-observation, per-kind table with CIs."""
    return summarise(localise_images(heatmaps, paths, observations, regions, threshold), n_resamples, seed)


def format_scores(table: pd.DataFrame) -> pd.DataFrame:
    """Readable columns: 'IoU (95% CI)', 'hit rate (95% CI)', 'chance' per observation and kind."""
    out = table[["observation", "kind", "n"]].copy()
    out["IoU (95% CI)"] = [f"{r.iou:.2f} ({r.iou_lo:.2f}-{r.iou_hi:.2f})" for r in table.itertuples()]
    out["hit rate (95% CI)"] = [f"{r.hit_rate:.2f} ({r.hit_lo:.2f}-{r.hit_hi:.2f})" for r in table.itertuples()]
    out["chance"] = table["chance"].round(3)
    return out
