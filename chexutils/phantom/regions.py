"""Where the phantom drew each sign: the ``phantom_regions.json`` sidecar, its encoding and reader.

Format (modelled on CheXlocalize's ground-truth segmentation JSON, Saporta et al. 2022, Nature
Machine Intelligence 4:867): one JSON object ::

    {"format": "chexutils-phantom-regions/1", "region_fraction": 0.2, "doc": "...",
     "images": {"<CSV Path>": {"<observation>": {"kind": "clear" | "faint" | "mimic",
                                                  "size": [H, W], "counts": [n0, n1, ...]}}}}

``counts`` is COCO's *uncompressed* run-length encoding (CheXlocalize stores COCO's compressed
string form of the same thing): alternating run lengths of 0 and 1, starting with a run of 0s
(possibly of length 0), over the mask flattened in column-major (Fortran) order; the counts sum
to H*W. ``size`` is the image's own (H, W), not the model's input size.

What a region is: the pixels whose density the sign (or mimic) changed by at least
``region_fraction`` of its largest change (``render.sign_region``); for geometric signs (a larger
heart, a wider mediastinum, a raised diaphragm) the change is measured against the same anatomy
drawn without that sign. ``clear`` and ``faint`` are drawn signs of a truly positive finding,
``mimic`` a look-alike on a truly negative one. A parent label implied only by a child (e.g. Lung
Opacity from a Consolidation) has no region of its own: nothing was drawn for it. Images and
observations with nothing drawn have no entry.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from chexutils.core.errors import DataError
from chexutils.core.labels import OBSERVATIONS

REGIONS_JSON = "phantom_regions.json"
FORMAT = "chexutils-phantom-regions/1"
KINDS = ("clear", "faint", "mimic")


def encode_mask(mask: np.ndarray) -> dict:
    """COCO uncompressed RLE of a 2-D bool mask: {"size": [H, W], "counts": [...]}."""
    mask = np.asarray(mask, bool)
    flat = mask.ravel(order="F").astype(np.int8)
    edges = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], edges, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        runs = [0] + runs  # counts always start with a (possibly empty) run of 0s
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": [int(r) for r in runs]}


def decode_mask(rle: dict) -> np.ndarray:
    """The (H, W) bool mask of an uncompressed COCO RLE (inverse of ``encode_mask``)."""
    h, w = (int(n) for n in rle["size"])
    counts = np.asarray(rle["counts"], np.int64)
    if counts.sum() != h * w or (counts < 0).any():
        raise ValueError(f"run lengths sum to {counts.sum()}, expected H*W = {h * w}")
    values = np.arange(len(counts)) % 2 == 1
    return np.repeat(values, counts).reshape((h, w), order="F")


def write_regions(path, images: dict, region_fraction: float) -> Path:
    """Write the sidecar atomically (compact JSON: run-length lists would be long indented)."""
    path = Path(path)
    payload = {
        "format": FORMAT,
        "region_fraction": region_fraction,
        "doc": __doc__.split("Format")[0].strip() + " Encoding: see chexutils.phantom.regions.",
        "images": images,
    }
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, separators=(",", ":")))
    os.replace(tmp, path)
    return path


@dataclass
class Regions:
    """The regions of one phantom: ``mask(path, observation)`` decodes on demand."""

    images: dict
    region_fraction: float
    source: Path

    def kind(self, path: str, observation: str) -> str | None:
        """'clear', 'faint', 'mimic', or None when nothing was drawn for it."""
        entry = self.images.get(path, {}).get(observation)
        return None if entry is None else entry["kind"]

    def mask(self, path: str, observation: str) -> np.ndarray | None:
        """(H, W) bool region, or None when nothing was drawn for it."""
        entry = self.images.get(path, {}).get(observation)
        return None if entry is None else decode_mask(entry)

    def table(self):
        """One row per drawn region: Path, observation, kind, height, width, area (pixels)."""

        rows = [
            {
                "Path": p,
                "observation": o,
                "kind": e["kind"],
                "height": e["size"][0],
                "width": e["size"][1],
                "area": int(sum(e["counts"][1::2])),
            }
            for p, per in self.images.items()
            for o, e in per.items()
        ]
        return pd.DataFrame(rows, columns=["Path", "observation", "kind", "height", "width", "area"])


def read_regions(chexpert_dir) -> Regions:
    """Read ``<chexpert_dir>/phantom_regions.json`` (chexpert_dir: the CheXpert-v1.0-small folder).

    A missing, foreign or malformed file is a DataError naming it and what was expected.
    """
    path = Path(chexpert_dir) / REGIONS_JSON
    if not path.is_file():
        raise DataError(
            f"{path}: file does not exist; expected the phantom's sign regions "
            "(generate the phantom with this version of chexutils.phantom)"
        )
    try:
        payload = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"{path} line {err.lineno}: not valid JSON ({err.msg})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise DataError(
            f"{path}: format is {payload.get('format') if isinstance(payload, dict) else None!r}; expected {FORMAT!r}"
        )
    for p, per in payload["images"].items():
        for obs, entry in per.items():
            if obs not in OBSERVATIONS or entry.get("kind") not in KINDS or len(entry.get("size", ())) != 2:
                raise DataError(
                    f"{path}: entry {p!r} / {obs!r} is not an observation with kind in {KINDS} and size [H, W]"
                )
    return Regions(payload["images"], float(payload["region_fraction"]), path)
