"""The phantom's drawing surface: a `Canvas` of normalised coordinates (x across, y down, both 0..1)
holding an additive density map (0 = air, about 0.5 = soft tissue, about 0.8 = bone), the `Lung` fields
in it, smooth random fields and soft ramps. The signs and mimics that draw on it: `render_signs.py`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np


@functools.lru_cache(maxsize=256)
def _basis(n: int, k: int) -> np.ndarray:
    """(n, k) rows of gaussian bumps with unit norm: maps k random knots to a smooth n-sample profile."""
    t = (np.arange(n) + 0.5) / n
    c = (np.arange(k) + 0.5) / k
    b = np.exp(-0.5 * ((t[:, None] - c[None, :]) * k) ** 2)
    return (b / np.sqrt((b * b).sum(axis=1, keepdims=True))).astype(np.float32)


def smooth_field(rng: np.random.Generator, shape: tuple[int, int], k: int) -> np.ndarray:
    """Unit-variance random field with about ``k`` blobs down the image (two small matmuls, no FFT)."""
    h, w = shape
    ky = max(2, min(k, h // 2))
    kx = max(2, min(round(k * w / h), w // 2))
    knots = rng.standard_normal((ky, kx), dtype=np.float32)
    return _basis(h, ky) @ knots @ _basis(w, kx).T


def ramp(a, width: float):
    """Soft step: 0 for a <= 0, rising linearly to 1 at a = width (used for every mask edge)."""
    return np.clip(a * (1.0 / width), 0.0, 1.0)


@dataclass
class Lung:
    """One lung field: parabolic apex, lateral wall at ``cx + side*a`` and a diaphragm dome below.

    ``side`` points to the wall where the costophrenic angle lies (lateral on a frontal view,
    posterior on a lateral view); hilum and zones are derived from the same numbers.
    """

    cx: float
    a: float
    top: float
    apex_h: float
    dome_y: float
    dome_cx: float
    depth: float
    side: int

    def halfwidth(self, v):
        return self.a * np.sqrt(np.clip((v - self.top) * (1.0 / self.apex_h), 0.0, 1.0))

    def dome(self, u):
        return self.dome_y + self.depth * ((u - self.dome_cx) * (1.0 / self.a)) ** 2

    def mask(self, u, v, px: float, py: float):
        """Soft-edged lung mask (edge about two pixels wide)."""
        return ramp(self.halfwidth(v) - np.abs(u - self.cx), 2 * px) * ramp(self.dome(u) - v, 2 * py)

    @property
    def hilum(self) -> tuple[float, float]:
        return self.cx - self.side * 0.45 * self.a, self.top + 0.5 * (self.dome_y - self.top)

    def zone_y(self, frac: float) -> float:
        """y at ``frac`` of the way from apex (0) to dome top (1)."""
        return self.top + frac * (self.dome_y - self.top)


class Canvas:
    """Working state of one image: coordinate grids, anatomy, density map and marking gain."""

    def __init__(self, u, v, x, y, frontal: bool, anat: dict):
        self.u, self.v, self.x, self.y = u, v, x, y
        self.h, self.w = u.shape
        self.px, self.py = 1.0 / self.w, 1.0 / self.h
        self.asp = self.w / self.h
        self.frontal = frontal
        self.lungs: list[Lung] = anat["lungs"]
        self.heart: dict = anat["heart"]
        self.med: dict = anat["med"]
        self.air: float = anat["air"]
        self.rib_amp, self.rib_sp = anat["ribs"]["amp"], anat["ribs"]["sp"]
        self.memo: dict = {}
        self.density = self.lung_mask = self.lung_masks = self.rib_phase = self.rib_zone = None
        self.body = self.patchy = None
        self.mark_gain = np.ones_like(u)

    def pick_lung(self, rng) -> int:
        return int(rng.integers(len(self.lungs)))

    def zone_point(self, lung: Lung, frac: float, rng) -> tuple[float, float]:
        """A point in the lung at height ``frac`` (0 apex .. 1 base), away from the medial edge."""
        y = lung.zone_y(frac)
        hw = float(lung.halfwidth(np.float32(y)))
        return lung.cx + lung.side * hw * rng.uniform(-0.1, 0.6), y

    def blob(self, cx, cy, r, sharp_px: float | None = None):
        """Round spot of radius ``r`` (x units): gaussian, or a disk with a ``sharp_px`` edge."""
        d2 = ((self.u - cx) * (1.0 / r)) ** 2 + ((self.v - cy) * (1.0 / (r * self.asp))) ** 2
        if sharp_px is None:
            return np.exp(-d2)
        return ramp(1.0 - np.sqrt(d2), sharp_px * self.px / r)

    def band(self, x0, y0, x1, y1, half: float, soft_px: float = 1.0):
        """Straight band of half-width ``half`` (x units) from one point to another, with soft ends."""
        dx, dy = (x1 - x0), (y1 - y0) / self.asp
        ln = max(float(np.hypot(dx, dy)), 1e-6)
        pu, pv = self.u - x0, (self.v - y0) * (1.0 / self.asp)
        across = np.abs(pu * (dy / ln) - pv * (dx / ln))
        along = pu * (dx / ln) + pv * (dy / ln)
        soft = soft_px * self.px
        return ramp(half - across, soft) * ramp(along + half, soft) * ramp(ln + half - along, soft)

    def curve(self, ys, xs, width_px: float):
        """Thin line x = f(y) through knots, ``width_px`` wide (pixel grid: one interp per row, no rotation)."""
        yc = self.y[:, 0]
        c = np.interp(yc, ys, xs)
        slope = np.gradient(c, yc) * self.asp
        inside = ((yc >= ys[0]) & (yc <= ys[-1])).astype(np.float32)
        d = np.abs(self.x - c[:, None]) * (self.w / np.sqrt(1.0 + slope**2))[:, None]
        return np.clip(0.5 * width_px + 0.5 - d, 0.0, 1.0) * inside[:, None]


# ---- geometric signs: change anatomy before it is drawn -----------------------------------------
