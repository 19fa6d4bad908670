"""The per-finding signs and look-alike mimics used by `render.py`, drawn on a `Canvas` (`canvas.py`).

A sign scales with its severity ``s`` in (0, 1]. ``MIMICS`` are the hand-made look-alikes used with
``mimic_style="look-alike"``: each copies a faint sign's brightness and place but differs in shape,
texture or position, so a model could in principle tell the two apart (the default style draws a
mimic as the sign itself, see `render.py`).
"""

from __future__ import annotations

import numpy as np

from chexutils.phantom.canvas import Canvas, ramp, smooth_field


def pre_enlarged_cardiomediastinum(cv: Canvas, s: float, rng) -> None:
    """Wider upper mediastinum (bulging most at the level of the great vessels)."""
    cv.med["w"] *= 1.0 + 0.9 * s
    cv.med["bulge"] += 0.03 * s


def pre_cardiomegaly(cv: Canvas, s: float, rng) -> None:
    """Wider, slightly taller heart (cardiothoracic ratio rising from ~0.4 to ~0.6)."""
    cv.heart["a"] *= 1.0 + 0.5 * s
    cv.heart["b"] *= 1.0 + 0.15 * s


def pre_atelectasis(cv: Canvas, s: float, rng) -> None:
    """Volume loss: the hemidiaphragm under the collapsed base rises."""
    i = cv.pick_lung(rng)
    cv.lungs[i].dome_y -= 0.01 + 0.05 * s
    cv.memo["atelectasis"] = i


def mimic_pre_enlarged_cardiomediastinum(cv: Canvas, s: float, rng) -> None:
    """Patient rotation: the mediastinum is shifted to one side, widened there only."""
    side = 1 if rng.random() < 0.5 else -1
    cv.med["shift"] += side * 0.035 * s
    cv.med["w"] *= 1.0 + 0.2 * s


def mimic_pre_cardiomegaly(cv: Canvas, s: float, rng) -> None:
    """Low inspiration / AP: high diaphragms make a normal heart look broad and squat."""
    for lung in cv.lungs:
        lung.dome_y -= 0.07 * s
    cv.heart["a"] *= 1.0 + 0.2 * s
    cv.heart["b"] *= 1.0 - 0.12 * s
    cv.heart["y"] -= 0.06 * s


# ---- overlay signs: add density to the drawn anatomy --------------------------------------------


def sign_lung_opacity(cv: Canvas, s: float, rng) -> None:
    """Single patch of increased density in one lung zone, patchy in texture."""
    lung = cv.lungs[cv.pick_lung(rng)]
    x, y = cv.zone_point(lung, rng.uniform(0.25, 0.85), rng)
    r = 0.05 + 0.04 * s
    patch = cv.blob(x, y, r) * np.clip(0.55 + 0.45 * cv.patchy, 0.2, 1.0)
    cv.density += cv.air * (0.15 + 0.5 * s) * patch * cv.lung_mask


def mimic_lung_opacity(cv: Canvas, s: float, rng) -> None:
    """Pectoral muscle / soft tissue: a smooth homogeneous band that runs on beyond the lung."""
    lung = cv.lungs[cv.pick_lung(rng)]
    x0, x1 = lung.cx + lung.side * (lung.a + 0.08), lung.cx - lung.side * 0.2 * lung.a
    y0 = lung.top + rng.uniform(0.0, 0.05)
    cv.density += cv.air * (0.15 + 0.3 * s) * cv.band(x0, y0, x1, y0 + 0.25, 0.045, soft_px=4.0) * cv.body


def sign_lung_lesion(cv: Canvas, s: float, rng) -> None:
    """Small, sharply marginated round nodule."""
    lung = cv.lungs[cv.pick_lung(rng)]
    x, y = cv.zone_point(lung, rng.uniform(0.2, 0.8), rng)
    r = max(0.011 + 0.017 * s, (0.8 + s) * cv.px)  # at least a pixel or two on tiny images
    cv.density += cv.air * (0.35 + 0.6 * s) * cv.blob(x, y, r, sharp_px=1.0)


def mimic_lung_lesion(cv: Canvas, s: float, rng) -> None:
    """Nipple shadows: paired soft spots low and lateral, sharp laterally and fading medially."""
    lungs = cv.lungs if cv.frontal else cv.lungs[:1]
    for lung in lungs:
        side = lung.side if cv.frontal else -lung.side
        x = lung.cx + side * lung.a * (0.45 if cv.frontal else 0.85)
        y = lung.dome_y - rng.uniform(0.03, 0.07)
        dx = (cv.u - x) * np.where((cv.u - x) * side > 0, 2.5, 0.8).astype(np.float32)
        d2 = (dx * (1.0 / 0.022)) ** 2 + ((cv.v - y) * (1.0 / (0.022 * cv.asp))) ** 2
        cv.density += cv.air * (0.25 + 0.4 * s) * np.exp(-d2)


def sign_edema(cv: Canvas, s: float, rng) -> None:
    """Bilateral perihilar (butterfly) haze with loss of the vascular markings."""
    haze = 0.0
    for lung in cv.lungs:
        hx, hy = lung.hilum
        haze = haze + np.exp(-(((cv.u - hx) * (1.0 / (0.1 + 0.08 * s))) ** 2 + ((cv.v - hy) * (1.0 / 0.16)) ** 2))
    haze = haze * cv.lung_mask
    cv.density += cv.air * (0.15 + 0.5 * s) * haze * np.clip(0.8 + 0.3 * cv.patchy, 0.0, 1.0)
    cv.mark_gain *= 1.0 - min(1.0, 0.3 + 0.7 * s) * haze


def mimic_edema(cv: Canvas, s: float, rng) -> None:
    """Thick soft tissue / under-penetration: haze rising to the bases over the whole chest, markings kept."""
    grad = np.clip((cv.v - 0.3) * (1.0 / 0.55), 0.0, 1.0)
    cv.density += cv.air * (0.05 + 0.12 * s) * grad * cv.body


def sign_consolidation(cv: Canvas, s: float, rng) -> None:
    """Dense lobar opacity bounded sharply by a fissure, with dark air-bronchogram lines."""
    i = cv.pick_lung(rng)
    lung = cv.lungs[i]
    upper = rng.random() < 0.35
    fis = lung.zone_y(0.45 if upper else 0.55) + rng.uniform(0.1, 0.4) * (cv.u - lung.cx) * lung.side
    dist = (fis - cv.v) if upper else (cv.v - fis)
    region = ramp(dist, 1.5 * cv.py) * ramp(0.1 + 0.3 * s - dist, 0.06) * cv.lung_masks[i]
    bronchi = np.exp(-((smooth_field(rng, (cv.h, cv.w), 9) * 4.0) ** 2))
    cv.density += cv.air * (0.15 + 0.75 * s) * region * (1.0 - 0.55 * bronchi)
    cv.mark_gain *= 1.0 - min(1.0, 0.5 + 0.5 * s) * region


def mimic_consolidation(cv: Canvas, s: float, rng) -> None:
    """Overlapping scapula: a homogeneous triangle on the upper lateral lung, running off the chest wall."""
    lung = cv.lungs[cv.pick_lung(rng)]
    wall = lung.cx + lung.side * lung.a
    y0 = lung.zone_y(rng.uniform(0.05, 0.15))
    out = (cv.u - wall) * lung.side + 0.09 - 0.25 * (cv.v - y0)  # medial edge slants laterally downward
    tri = ramp(out, 1.5 * cv.px) * ramp(cv.v - y0, 3 * cv.py) * ramp(y0 + 0.3 - cv.v, 0.08)
    tri = tri * ramp(0.05 - (cv.u - wall) * lung.side, 0.03)
    cv.density += cv.air * (0.2 + 0.35 * s) * tri * cv.body


def sign_pneumonia(cv: Canvas, s: float, rng) -> None:
    """Patchy, multifocal, ill-defined opacities in one lung."""
    i = cv.pick_lung(rng)
    lung = cv.lungs[i]
    spots = 0.0
    for _ in range(3 + int(rng.integers(3))):
        x, y = cv.zone_point(lung, rng.uniform(0.35, 0.9), rng)
        spots = spots + cv.blob(x, y, 0.025 + 0.02 * s)
    patch = np.minimum(spots, 1.0) * np.clip(0.5 + 0.6 * cv.patchy, 0.15, 1.0) * cv.lung_masks[i]
    cv.density += cv.air * (0.2 + 0.55 * s) * patch
    cv.mark_gain *= 1.0 - 0.6 * s * patch


def mimic_pneumonia(cv: Canvas, s: float, rng) -> None:
    """Bilateral basal vascular crowding: more prominent tubular markings at both bases, no patches."""
    zone = 0.0
    for lung in cv.lungs:
        zone = zone + np.exp(
            -(((cv.v - lung.dome_y) * (1.0 / 0.12)) ** 2) - ((cv.u - lung.cx) * (1.0 / (1.3 * lung.a))) ** 2
        )
    cv.mark_gain *= 1.0 + (1.0 + 2.5 * s) * zone
    cv.density += cv.air * 0.08 * s * zone * cv.lung_mask


def sign_atelectasis(cv: Canvas, s: float, rng) -> None:
    """Plate-like linear band above the (raised) hemidiaphragm of one base, over a denser collapsed base.

    The basal density (collapsed, airless lung under the plate) keeps a faint sign visible as an area
    at the study's 64 px, where the plate alone is under a pixel thick.
    """
    i = cv.memo.get("atelectasis", 0)
    lung = cv.lungs[i]
    yb = lung.dome_y - rng.uniform(0.04, 0.08) + rng.uniform(-0.15, 0.15) * (cv.u - lung.cx)
    half = 0.004 + 0.01 * s
    xc = lung.cx + lung.side * 0.15 * lung.a
    across = ramp((0.3 + 0.35 * s) * lung.a - np.abs(cv.u - xc), 0.03)
    plate = ramp(half - np.abs(cv.v - yb), 1.5 * cv.py) * across
    base = ramp(cv.v - yb, 2 * cv.py) * across
    cv.density += cv.air * ((0.35 + 0.55 * s) * plate + (0.3 + 0.3 * s) * base) * cv.lung_masks[i]


def mimic_atelectasis(cv: Canvas, s: float, rng) -> None:
    """A normal fissure seen end-on: hair-thin, crossing the whole lung, no volume loss."""
    lung = cv.lungs[0]
    if cv.frontal:
        x0, y0, x1, y1 = lung.cx - 0.9 * lung.a, lung.zone_y(0.45), lung.cx + 0.9 * lung.a, lung.zone_y(0.47)
    else:
        x0, y0, x1, y1 = lung.cx + 0.8 * lung.a, lung.zone_y(0.25), lung.cx - 0.7 * lung.a, lung.dome_y
    line = cv.band(x0, y0, x1, y1, 0.8 * cv.px, soft_px=1.0)
    cv.density += cv.air * (0.25 + 0.4 * s) * line * cv.lung_mask


def sign_pneumothorax(cv: Canvas, s: float, rng) -> None:
    """Visceral pleural line near the apex/lateral wall, with darker marking-free lung beyond it."""
    i = cv.pick_lung(rng)
    lung = cv.lungs[i]
    f = 1.0 - (0.05 + 0.2 * s)
    ox, oy = lung.cx - lung.side * 0.4 * lung.a, lung.dome_y
    inner = lung.mask(ox + (cv.u - ox) * (1.0 / f), oy + (cv.v - oy) * (1.0 / f), cv.px, cv.py)
    upper = ramp(lung.dome_y - 0.06 - cv.v, 0.06)
    gap = np.clip(cv.lung_masks[i] - inner, 0.0, 1.0) * upper
    edge = (1.0 - np.abs(2.0 * inner - 1.0)) * cv.lung_masks[i] * upper
    cv.mark_gain *= 1.0 - gap
    cv.density += cv.air * ((0.2 + 0.35 * s) * edge - (0.1 + 0.15 * s) * gap)


def mimic_pneumothorax(cv: Canvas, s: float, rng) -> None:
    """Skin fold: a density edge (not a line) along the chest wall that runs past the lung, markings kept."""
    lung = cv.lungs[cv.pick_lung(rng)]
    xw = lung.cx + lung.side * lung.a * rng.uniform(0.6, 0.85)
    d = (cv.u - (xw - lung.side * 0.12 * (cv.v - 0.5) ** 2)) * lung.side
    fold = ramp(d, 1.0 * cv.px) * np.exp(-np.maximum(d, 0.0) * (1.0 / 0.035))
    cv.density += cv.air * (0.15 + 0.3 * s) * fold * cv.body * ramp(cv.v - 0.2, 0.08)


def sign_pleural_effusion(cv: Canvas, s: float, rng) -> None:
    """Fluid filling the costophrenic angle: a meniscus that climbs the wall, blunting the angle."""
    i = cv.pick_lung(rng)
    lung = cv.lungs[i]
    t = np.clip((cv.u - lung.cx) * (lung.side / lung.a), 0.0, 1.0)
    level = lung.dome_y + lung.depth - (0.03 + 0.3 * s) * (0.45 + 0.55 * t * t)
    fluid = ramp(cv.v - level, 0.015) * cv.lung_masks[i]
    cv.density += 0.85 * cv.air * fluid
    cv.mark_gain *= 1.0 - fluid


def mimic_pleural_effusion(cv: Canvas, s: float, rng) -> None:
    """Epicardial fat pad at the cardiophrenic angle, or bilateral breast shadows with a convex lower edge."""
    amp = cv.air * (0.15 + 0.35 * s)
    if rng.random() < 0.5:
        lung = cv.lungs[-1]
        x = cv.heart["x"] + cv.heart["a"] * (1.0 if cv.frontal else -1.0) * 0.9
        cv.density += amp * cv.blob(x, lung.dome_y - 0.02, 0.05)
        return
    for lung in cv.lungs:
        cx, cy = lung.cx + (lung.side if cv.frontal else -1) * 0.5 * lung.a, lung.dome_y - 0.03
        d2 = ((cv.u - cx) * (1.0 / 0.17)) ** 2 + ((cv.v - cy) * (1.0 / 0.13)) ** 2
        cv.density += 0.8 * amp * ramp(1.0 - d2, 0.08) * ramp(cv.v - cy + 0.12, 0.14) * cv.body


def sign_pleural_other(cv: Canvas, s: float, rng) -> None:
    """Lobulated pleural thickening strip along the lateral (or posterior) chest wall."""
    i = cv.pick_lung(rng)
    lung = cv.lungs[i]
    y0 = lung.zone_y(rng.uniform(0.2, 0.45))
    length = 0.15 + 0.2 * s
    thick = max(0.01 + 0.035 * s, (1.0 + s) * cv.px) * np.clip(1.0 + 0.4 * cv.patchy, 0.5, 1.6)
    d_in = lung.halfwidth(cv.v) - (cv.u - lung.cx) * lung.side
    strip = ramp(thick - d_in, 1.5 * cv.px) * ramp(cv.v - y0, 0.03) * ramp(y0 + length - cv.v, 0.03)
    cv.density += 0.8 * cv.air * strip * cv.lung_masks[i]


def mimic_pleural_other(cv: Canvas, s: float, rng) -> None:
    """Companion shadow: a thin smooth band hugging the under-edge of an upper rib near the apex."""
    k = float(rng.integers(1, 3))
    rel = cv.rib_phase - k
    lat = np.abs(cv.u - 0.5) if cv.frontal else (cv.u - 0.35)
    width = max(0.07, 1.2 * cv.py / cv.rib_sp)  # in rib spacings, at least about a pixel
    shadow = np.exp(-(((rel - 0.3) * (1.0 / width)) ** 2)) * ramp(lat - 0.15, 0.08)
    cv.density += cv.air * (0.2 + 0.35 * s) * shadow * cv.lung_mask


def sign_fracture(cv: Canvas, s: float, rng) -> None:
    """One rib broken: a lucent gap and a step (the lateral fragment displaced, denser, angulating back)."""
    lung = cv.lungs[cv.pick_lung(rng)]
    k = float(rng.integers(3, 8))
    uf = lung.cx + lung.side * lung.a * rng.uniform(0.35, 0.7)
    gap = (1.5 + 3.0 * s) * cv.px
    lateral = (cv.u - uf) * lung.side
    shift = (0.15 + 0.35 * s) * np.clip(1.0 - lateral * (1.0 / 0.15), 0.0, 1.0) * (lateral > 0)
    w = cv.memo["rib_width"]
    old = np.exp(-(((cv.rib_phase - k) * (1.0 / w)) ** 2))
    new = np.exp(-(((cv.rib_phase - k - shift) * (1.0 / w)) ** 2)) * ramp(np.abs(cv.u - uf) - 0.5 * gap, cv.px)
    near = np.exp(-(((cv.u - uf) * (1.0 / 0.03)) ** 2))
    cv.density += cv.rib_amp * (new * (1.0 + 0.8 * s * near) - old) * cv.rib_zone


def mimic_fracture(cv: Canvas, s: float, rng) -> None:
    """Overlapping (crowded) anterior rib: an extra oblique rib shadow crossing the posterior ribs, unbroken."""
    lung = cv.lungs[cv.pick_lung(rng)]
    y0 = lung.zone_y(rng.uniform(0.3, 0.6))
    x0, x1 = lung.cx + lung.side * lung.a, lung.cx - lung.side * 0.2 * lung.a
    rib = cv.band(x0, y0, x1, y0 + 0.12, 0.012, soft_px=2.0)
    cv.density += cv.rib_amp * (0.6 + 0.8 * s) * rib * cv.rib_zone


def sign_support_devices(cv: Canvas, s: float, rng) -> None:
    """Radio-opaque tube or line (NG/ET tube or central line), with a pacemaker box at high severity."""
    amp, wpx = 0.12 + 0.3 * s, 1.0 + 1.5 * s
    mid = 0.5 + cv.med["shift"]
    if not cv.frontal:
        cv.density += amp * cv.curve([0.0, 0.4, 0.8], [0.48, 0.55, 0.5], wpx)
    elif rng.random() < 0.5:  # nasogastric tube down the midline into the stomach
        cv.density += amp * cv.curve([0.0, 0.5, 0.78, 0.9], [mid, mid + 0.01, mid + 0.06, mid + 0.13], wpx)
    else:  # central venous line from the shoulder to the SVC
        side = 1 if rng.random() < 0.5 else -1
        cv.density += amp * cv.curve([0.12, 0.2, 0.42], [0.5 + side * 0.3, 0.5 + side * 0.12, mid + side * 0.03], wpx)
    if cv.frontal and s > 0.6 and rng.random() < 0.6:
        box = ramp(0.035 - np.abs(cv.x - 0.74), 2 * cv.px) * ramp(0.025 * cv.asp - np.abs(cv.y - 0.16), 2 * cv.py)
        cv.density += 0.5 * box + amp * cv.curve([0.16, 0.4, 0.62], [0.73, 0.6, 0.56], wpx)


def mimic_support_devices(cv: Canvas, s: float, rng) -> None:
    """ECG wire / clothing: a fainter wavy wire running off the body, ending in an electrode ring."""
    side = 1 if rng.random() < 0.5 else -1
    ys = np.linspace(0.0, rng.uniform(0.45, 0.7), 24)
    xs = 0.5 + side * (0.34 + 0.05 * np.sin(ys * rng.uniform(14, 22) + rng.uniform(0, 6)))
    amp = 0.08 + 0.18 * s
    cv.density += amp * cv.curve(ys, xs, 1.0)
    ex, ey = xs[-1], ys[-1] + 0.03
    r = np.sqrt(((cv.x - ex) * (1.0 / 0.02)) ** 2 + ((cv.y - ey) * (1.0 / (0.02 * cv.asp))) ** 2)
    cv.density += amp * ramp(0.25 - np.abs(r - 1.0), 0.15)


# name -> (geometric pre-step or None, overlay or None), for signs and for mimics
SIGNS = {
    "Enlarged Cardiomediastinum": (pre_enlarged_cardiomediastinum, None),
    "Cardiomegaly": (pre_cardiomegaly, None),
    "Lung Opacity": (None, sign_lung_opacity),
    "Lung Lesion": (None, sign_lung_lesion),
    "Edema": (None, sign_edema),
    "Consolidation": (None, sign_consolidation),
    "Pneumonia": (None, sign_pneumonia),
    "Atelectasis": (pre_atelectasis, sign_atelectasis),
    "Pneumothorax": (None, sign_pneumothorax),
    "Pleural Effusion": (None, sign_pleural_effusion),
    "Pleural Other": (None, sign_pleural_other),
    "Fracture": (None, sign_fracture),
    "Support Devices": (None, sign_support_devices),
}
MIMICS = {
    "Enlarged Cardiomediastinum": (mimic_pre_enlarged_cardiomediastinum, None),
    "Cardiomegaly": (mimic_pre_cardiomegaly, None),
    "Lung Opacity": (None, mimic_lung_opacity),
    "Lung Lesion": (None, mimic_lung_lesion),
    "Edema": (None, mimic_edema),
    "Consolidation": (None, mimic_consolidation),
    "Pneumonia": (None, mimic_pneumonia),
    "Atelectasis": (None, mimic_atelectasis),
    "Pneumothorax": (None, mimic_pneumothorax),
    "Pleural Effusion": (None, mimic_pleural_effusion),
    "Pleural Other": (None, mimic_pleural_other),
    "Fracture": (None, mimic_fracture),
    "Support Devices": (None, mimic_support_devices),
}
