"""Synthetic ("phantom") chest radiographs whose pixels carry the CheXpert findings.

`render_image(signs, mimics, frontal=..., size=(W, H), rng=...)` draws one grayscale image. The
anatomy varies per image (lung size and position, rotation, heart size, habitus, exposure) and is
overlaid with gaussian and low-frequency noise, so nothing is trivially separable. Each finding in
`FINDINGS` has a localised sign whose visibility scales with severity. A "mimic" (a truly negative
study in the equivocal zone) is drawn, by default, as that same sign at faint strength
(``mimic_style="faint-sign"``): faint positives and mimics then look alike by construction, the
premise of the phantom's expected answer. ``mimic_style="look-alike"`` draws instead a hand-made
look-alike that matches a faint sign's brightness and place but differs in shape or texture
(see `render_signs`), which a network may learn to tell apart. Geometry lives in normalised
coordinates, so any size works.

Randomness: the passed generator only seeds independent child streams (anatomy, texture, noise,
and one per finding), so adding a sign changes the pixels only where that sign is drawn.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Mapping

import numpy as np

from chexutils.core.labels import OBSERVATIONS
from chexutils.phantom.canvas import Canvas, Lung, ramp, smooth_field
from chexutils.phantom.render_signs import MIMICS, SIGNS

FINDINGS: tuple[str, ...] = tuple(o for o in OBSERVATIONS if o != "No Finding")  # the 13 that can be drawn
_RIB_WIDTH = 0.17  # rib half-profile width, as a fraction of the rib spacing
MIMIC_STYLES = ("faint-sign", "look-alike")  # how a mimic is drawn: the finding's own sign, or a look-alike


def render_image(
    signs: Mapping[str, float],
    mimics: Mapping[str, float],
    *,
    frontal: bool,
    size: tuple[int, int],
    rng: np.random.Generator,
    regions: dict | None = None,
    mimic_style: str = "faint-sign",
) -> np.ndarray:
    """Return an (H, W) uint8 grayscale radiograph, size = (W, H).

    ``signs`` maps a finding to its severity in (0, 1] (about 0.1-0.3 faint, 0.45-1 clear);
    ``mimics`` maps a finding that is absent to the strength in (0, 1] of a look-alike.
    The same arguments with an identically seeded ``rng`` give identical pixels.
    ``regions``, when a dict, receives ``{(finding, "sign" | "mimic"): (H, W) bool mask}``: where
    that sign or mimic changed the density (see ``sign_regions``); the pixels are the same either way.
    ``mimic_style`` (one of ``MIMIC_STYLES``): "faint-sign" draws a mimic exactly as the finding's sign
    of that strength, from the same random stream (so ``mimics={f: s}`` gives the pixels of
    ``signs={f: s}``); "look-alike" draws the finding's hand-made look-alike.
    """
    signs, mimics = _checked(signs, "signs"), _checked(mimics, "mimics")
    if mimic_style not in MIMIC_STYLES:
        raise ValueError(f"mimic_style must be one of {MIMIC_STYLES}, got {mimic_style!r}")
    mimic_table, mimic_slot = (SIGNS, 0) if mimic_style == "faint-sign" else (MIMICS, 1)
    w, h = _checked_size(size)
    seeds = rng.integers(0, 2**62, size=3 + 2 * len(FINDINGS))
    child = [np.random.default_rng(int(s)) for s in seeds[:3]]
    anat_rng, tex_rng, noise_rng = child
    anat = _frontal_anatomy(anat_rng) if frontal else _lateral_anatomy(anat_rng)
    u, v = _coords(w, h, anat["rot"], anat["shift"])
    x, y = _grid(w, h)
    cv = Canvas(u, v, x, y, bool(frontal), anat)
    cv.memo["rib_width"] = _RIB_WIDTH

    steps = []  # (pre, overlay, strength, rng) in FINDINGS order, signs before mimics
    keys = []  # (finding, "sign" | "mimic", seed) per step, for the region record
    for i, name in enumerate(FINDINGS):
        for kind, chosen, table, slot in (("sign", signs, SIGNS, 0), ("mimic", mimics, mimic_table, mimic_slot)):
            if name in chosen:
                seed = int(seeds[3 + 2 * i + slot])
                steps.append((*table[name], chosen[name], np.random.default_rng(seed)))
                keys.append((name, kind, seed))
    plain_anat = copy.deepcopy(anat) if regions is not None else None  # pre-steps edit anat in place
    for pre, _, s, r in steps:
        if pre is not None:
            pre(cv, s, r)
    (_draw_frontal if frontal else _draw_lateral)(cv, anat)
    changes = {}  # step index -> density change it made
    if regions is not None:
        for k, (pre, _, _, _) in enumerate(steps):
            if pre is not None:
                changes[k] = cv.density - _anatomy_without(k, steps, keys, plain_anat, (u, v, x, y), frontal)
    cv.patchy = smooth_field(tex_rng, (h, w), 12)
    for k, (_, overlay, s, r) in enumerate(steps):
        if overlay is not None:
            before = cv.density.copy() if regions is not None else None
            overlay(cv, s, r)
            if regions is not None:
                delta = np.abs(cv.density - before)
                changes[k] = np.maximum(np.abs(changes[k]), delta) if k in changes else delta
    if regions is not None:
        for k, change in changes.items():
            regions[keys[k][:2]] = sign_region(change)
    _add_markings(cv, anat, tex_rng)
    return _expose(cv, anat["tone"], noise_rng)


REGION_FRACTION = 0.2  # a sign's region: pixels whose density it changed by >= this share of its largest change


def sign_region(change: np.ndarray) -> np.ndarray:
    """(H, W) bool: where ``|change| >= REGION_FRACTION * max |change|`` (all False for no change)."""
    mag = np.abs(change)
    peak = float(mag.max()) if mag.size else 0.0
    if peak <= 1e-6:
        return np.zeros(mag.shape, bool)
    return mag >= REGION_FRACTION * peak


def _anatomy_without(skip: int, steps, keys, plain_anat: dict, grids, frontal: bool) -> np.ndarray:
    """The anatomy density drawn with every geometric pre-step except step ``skip`` (fresh, equally seeded rngs)."""
    anat = copy.deepcopy(plain_anat)
    cv = Canvas(*grids, frontal, anat)
    cv.memo["rib_width"] = _RIB_WIDTH
    for k, (pre, _, s, _) in enumerate(steps):
        if pre is not None and k != skip:
            pre(cv, s, np.random.default_rng(keys[k][2]))
    (_draw_frontal if frontal else _draw_lateral)(cv, anat)
    return cv.density


def _checked(mapping: Mapping[str, float], what: str) -> dict[str, float]:
    """Validate names (must be in FINDINGS) and strengths (must lie in (0, 1])."""
    out = {}
    for key, value in dict(mapping).items():
        if key not in FINDINGS:
            raise ValueError(f"unknown observation {key!r} in {what}; expected one of {FINDINGS}")
        try:
            s = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{what}[{key!r}] = {value!r} is not a number in (0, 1]") from None
        if not 0.0 < s <= 1.0:
            raise ValueError(f"{what}[{key!r}] = {value!r} is outside (0, 1]")
        out[key] = s
    return out


def _checked_size(size) -> tuple[int, int]:
    w, h = (int(n) for n in size)
    if w < 16 or h < 16:
        raise ValueError(f"size must be (W, H) with both at least 16 pixels, got {tuple(size)!r}")
    return w, h


@functools.lru_cache(maxsize=64)
def _grid(w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in 0..1 as broadcastable (1, W) and (H, 1) float32 arrays."""
    x = ((np.arange(w) + 0.5) / w).astype(np.float32)[None, :]
    y = ((np.arange(h) + 0.5) / h).astype(np.float32)[:, None]
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def _coords(w: int, h: int, rot: float, shift: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Patient coordinates (u, v): the pixel grid rotated about the centre (in pixel space) and shifted."""
    x, y = _grid(w, h)
    asp, c, s = w / h, math.cos(rot), math.sin(rot)
    dx, dy = x - 0.5, y - 0.5
    u = (dx * c + 0.5 - shift[0]) + dy * (s / asp)
    v = (dy * c + 0.5 - shift[1]) - dx * (s * asp)
    return u, v


def _tone(g: np.random.Generator) -> dict:
    """Exposure: offset, contrast, gamma, heel-effect gradient, noise levels, marking strength."""
    return {
        "bias": g.uniform(0.0, 0.08),
        "contrast": g.uniform(0.8, 1.05),
        "gamma": g.uniform(0.8, 1.25),
        "grad": g.uniform(-0.06, 0.06),
        "noise": g.uniform(0.01, 0.03),
        "low": g.uniform(0.01, 0.04),
        "mark": g.uniform(0.05, 0.09),
    }


def _frontal_anatomy(g: np.random.Generator) -> dict:
    """Random PA/AP anatomy: two lungs, heart, mediastinum, ribs, body and exposure."""
    scale, dome = g.uniform(0.9, 1.08), g.uniform(0.72, 0.79)
    lungs = []
    for side in (-1, 1):
        a = 0.165 * scale * g.uniform(0.95, 1.05)
        cx = 0.5 + side * (g.uniform(0.035, 0.05) + a)
        lungs.append(
            Lung(
                cx=cx,
                a=a,
                top=g.uniform(0.09, 0.14),
                apex_h=g.uniform(0.28, 0.4),
                dome_y=dome - (0.025 if side < 0 else 0.0) + g.uniform(-0.01, 0.01),
                dome_cx=cx - side * 0.015,
                depth=g.uniform(0.06, 0.1),
                side=side,
            )
        )
    level = g.uniform(0.45, 0.58)
    return {
        "lungs": lungs,
        "air": level * g.uniform(0.6, 0.7),
        "heart": {
            "x": 0.5 + g.uniform(0.025, 0.055),
            "y": dome - g.uniform(0.07, 0.1),
            "a": 0.15 * g.uniform(0.88, 1.12),
            "b": 0.15 * g.uniform(0.9, 1.1),
        },
        "med": {"w": 0.05 * g.uniform(0.85, 1.15), "shift": g.uniform(-0.01, 0.01), "bulge": 0.0},
        "body": {"w": g.uniform(0.4, 0.47), "level": level},
        "ribs": {
            "top": g.uniform(0.1, 0.14),
            "sp": 0.066 * scale * g.uniform(0.94, 1.06),
            "curv": g.uniform(2.0, 3.0),
            "amp": g.uniform(0.07, 0.1),
        },
        "tone": _tone(g),
        "rot": math.radians(g.uniform(-4, 4)),
        "shift": (g.uniform(-0.025, 0.025), g.uniform(-0.03, 0.03)),
    }


def _lateral_anatomy(g: np.random.Generator) -> dict:
    """Random lateral anatomy: one lung field, anterior heart, great vessels, spine and sternum."""
    scale, dome = g.uniform(0.92, 1.06), g.uniform(0.64, 0.7)
    a = 0.27 * scale
    lung = Lung(
        cx=0.47,
        a=a,
        top=g.uniform(0.08, 0.13),
        apex_h=g.uniform(0.3, 0.4),
        dome_y=dome,
        dome_cx=0.47 - 0.1 * a,
        depth=g.uniform(0.08, 0.11),
        side=1,
    )
    level = g.uniform(0.45, 0.58)
    return {
        "lungs": [lung],
        "air": level * g.uniform(0.5, 0.6),
        "heart": {
            "x": g.uniform(0.34, 0.38),
            "y": dome - 0.03,
            "a": 0.15 * g.uniform(0.9, 1.1),
            "b": 0.17 * g.uniform(0.9, 1.1),
        },
        "med": {"w": 0.06 * g.uniform(0.85, 1.15), "shift": 0.0, "bulge": 0.0},
        "body": {"w": g.uniform(0.42, 0.47), "level": level},
        "ribs": {
            "top": g.uniform(0.1, 0.14),
            "sp": 0.07 * scale * g.uniform(0.94, 1.06),
            "curv": g.uniform(0.35, 0.55),
            "amp": g.uniform(0.05, 0.08),
        },
        "tone": _tone(g),
        "rot": math.radians(g.uniform(-3, 3)),
        "shift": (g.uniform(-0.02, 0.02), g.uniform(-0.03, 0.03)),
    }


def _body(cv: Canvas, half_width: float):
    """Soft-tissue silhouette (neck, shoulders, chest wall); stored as ``cv.body``."""
    if cv.frontal:
        half = 0.12 + (half_width + 0.03 - 0.12) * ramp(cv.v - 0.01, 0.13) - 0.03 * ramp(cv.v - 0.2, 0.6)
    else:
        half = half_width - 0.12 * ramp(0.12 - cv.v, 0.12)
    cv.body = ramp(half - np.abs(cv.u - 0.5), 3 * cv.px)
    return cv.body


def _ellipse(cv: Canvas, x: float, y: float, a: float, b: float, soft: float, tilt: float = 0.0):
    """Soft ellipse mask with semi-axes a (x units) and b (y units); tilt < 0 leans it down-right."""
    du, dv = (cv.u - x) * (1.0 / a), (cv.v - y) * (1.0 / b)
    return ramp(1.0 - du * du - dv * dv - tilt * du * dv, soft)


def _ribs(cv: Canvas, phase, zone, amp: float):
    """Periodic rib bands from a phase map (one rib per integer); stored for the fracture signs."""
    d = phase - np.round(phase)
    cv.rib_phase, cv.rib_zone = phase, zone
    return amp * np.exp(-((d * (1.0 / _RIB_WIDTH)) ** 2)) * zone


def _draw_frontal(cv: Canvas, anat: dict) -> None:
    """PA view: body, lungs, heart, mediastinum with trachea, gastric bubble, clavicles and ribs."""
    u, v, air = cv.u, cv.v, cv.air
    dens = anat["body"]["level"] * _body(cv, anat["body"]["w"])
    raw = [lung.mask(u, v, cv.px, cv.py) for lung in cv.lungs]
    hrt, med = cv.heart, cv.med
    heart = _ellipse(cv, hrt["x"], hrt["y"], hrt["a"], hrt["b"], 0.25, tilt=-0.6)
    mid = 0.5 + med["shift"]
    half = med["w"] + med["bulge"] * np.exp(-(((v - 0.3) * (1.0 / 0.1)) ** 2))
    mediast = ramp(half - np.abs(u - mid), 2 * cv.px) + 0.8 * cv.blob(mid + med["w"] + 0.005, 0.3, 0.025)
    mediast = np.minimum(mediast, 1.0) * ramp(hrt["y"] - v, 0.05)
    hidden = (1.0 - heart) * (1.0 - mediast)
    cv.lung_masks = [m * hidden for m in raw]
    cv.lung_mask = cv.lung_masks[0] + cv.lung_masks[1]
    dome = max(lung.dome_y for lung in cv.lungs)
    dens += (0.05 * heart + 0.03 * mediast) * ramp(dome - v, 0.04)
    dens -= air * (1.0 - 0.18 * ramp(v - 0.45, 0.4)) * cv.lung_mask  # bases overlapped by soft tissue
    for lung in cv.lungs:  # hilar vessels
        dens += 0.3 * air * cv.blob(lung.cx - lung.side * 0.8 * lung.a, lung.zone_y(0.5), 0.04) * cv.lung_mask
    dens -= 0.5 * air * ramp(0.016 - np.abs(u - mid), 1.5 * cv.px) * ramp(0.33 - v, 0.04)
    right = cv.lungs[1]
    dens -= 0.6 * air * cv.blob(right.cx - 0.02, right.dome_y + 0.07, 0.035) * cv.body
    for side in (-1, 1):
        dens += 0.12 * cv.band(0.5 + side * 0.05, 0.17, 0.5 + side * 0.33, 0.1, 0.013, soft_px=2.0)
    r = anat["ribs"]
    ax = np.abs(u - 0.5)
    d = v - r["top"] - r["curv"] * (ax - 0.15) ** 2
    phase = d * (1.0 - 0.2 * d) * (1.0 / r["sp"])  # ribs spread a little towards the bases
    outer = max(abs(lung.cx - 0.5) + lung.a for lung in cv.lungs) + 0.025
    bottom = max(lung.dome_y + lung.depth for lung in cv.lungs)
    lungs = raw[0] + raw[1]
    zone = (
        ramp(outer - ax, 0.03) * ramp(phase + 0.3, 0.3) * ramp(bottom + 0.03 - v, 0.04) * (0.35 + 0.65 * cv.lung_mask)
    )
    front = (v + 0.35 * ax - r["top"] - 0.1) * (1.0 / (1.15 * r["sp"]))
    anterior = np.exp(-(((front - np.round(front)) * (1.0 / 0.3)) ** 2)) * lungs * ramp(ax - 0.06, 0.06)
    cv.density = dens + _ribs(cv, phase, zone, r["amp"]) + 0.35 * r["amp"] * anterior


def _draw_lateral(cv: Canvas, anat: dict) -> None:
    """Lateral view: one lung, anterior heart, great vessels, sternum, trachea and a segmented spine."""
    u, v, air = cv.u, cv.v, cv.air
    dens = anat["body"]["level"] * _body(cv, anat["body"]["w"])
    lung = cv.lungs[0]
    raw = lung.mask(u, v, cv.px, cv.py)
    hrt, med = cv.heart, cv.med
    heart = _ellipse(cv, hrt["x"], hrt["y"], hrt["a"], hrt["b"], 0.25, tilt=0.5)
    vessels = _ellipse(cv, 0.47, 0.3, med["w"], 0.13, 0.8)
    cv.lung_masks = [raw * (1.0 - heart) * (1.0 - 0.5 * vessels)]
    cv.lung_mask = cv.lung_masks[0]
    dens += 0.05 * heart * ramp(lung.dome_y - v, 0.04) - air * cv.lung_mask
    dens -= 0.5 * air * cv.band(0.49, 0.0, 0.54, 0.32, 0.016, soft_px=2.0)
    dens += 0.12 * cv.band(0.2, 0.14, 0.23, 0.52, 0.011, soft_px=2.0)
    seg = v * (1.0 / 0.068) + 2.0 * u
    discs = np.exp(-(((seg - np.round(seg)) * (1.0 / 0.12)) ** 2))
    dens += 0.17 * ramp(0.05 - np.abs(u - 0.82), 2 * cv.px) * ramp(v - 0.02, 0.04) * (1.0 - 0.4 * discs)
    dens += 0.06 * ramp(0.22 - v, 0.12) * cv.body  # arms raised over the apices
    r = anat["ribs"]
    phase = (v - r["top"] - r["curv"] * (u - 0.4)) * (1.0 / r["sp"])
    zone = ramp(u - 0.35, 0.25) * ramp(0.79 - u, 0.03) * ramp(phase + 0.3, 0.3) * (0.3 + 0.7 * cv.lung_mask)
    cv.density = dens + _ribs(cv, phase, zone, r["amp"])


def _add_markings(cv: Canvas, anat: dict, tex_rng: np.random.Generator) -> None:
    """Vessel-like lung markings (ridges of a random field), strongest near the hila, scaled by mark_gain."""
    ridges = np.exp(-((smooth_field(tex_rng, (cv.h, cv.w), 36) * 3.5) ** 2))
    if cv.frontal:
        fall = np.clip(1.2 - 2.2 * np.abs(np.abs(cv.u - 0.5) - 0.12), 0.3, 1.0)
    else:
        fall = np.clip(1.2 - 2.0 * np.abs(cv.u - 0.5) - 1.2 * np.abs(cv.v - 0.45), 0.3, 1.0)
    cv.density += anat["tone"]["mark"] * ridges * cv.lung_mask * cv.mark_gain * fall


def _expose(cv: Canvas, tone: dict, noise_rng: np.random.Generator) -> np.ndarray:
    """Density -> 8-bit film: contrast, heel gradient, low-frequency and pixel noise, then a gamma LUT."""
    shape = (cv.h, cv.w)
    img = tone["bias"] + tone["contrast"] * cv.density + tone["grad"] * (cv.y - 0.5)
    img += tone["low"] * smooth_field(noise_rng, shape, 3) + 0.012 * smooth_field(noise_rng, shape, 10)
    img += tone["noise"] * noise_rng.standard_normal(shape, dtype=np.float32)
    q = np.clip(img * 1023.0 + 0.5, 0.0, 1023.0).astype(np.uint16)
    lut = (255.0 * np.linspace(0.0, 1.0, 1024) ** tone["gamma"] + 0.5).astype(np.uint8)
    return lut[q]
