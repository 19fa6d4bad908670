"""The phantom CheXpert: a generated stand-in for the registration-only real data set.

`generate_phantom(out, ...)` writes ``out/CheXpert-v1.0-small/`` with the real layout and
schema; ``python -m chexutils.phantom --out DIR`` does the same from the shell. `read_truth(dir)`
reads its sidecar: the true findings and the expected better policy per observation;
`read_regions(chexpert_dir)` reads where each sign was drawn (format in ``regions``).
"""

from .generate import DEFAULT_SIZE, generate_phantom
from .regions import REGIONS_JSON, Regions, decode_mask, encode_mask, read_regions
from .sidecar import TRUTH_CSV, TRUTH_JSON, PhantomTruth, read_truth

__all__ = [
    "generate_phantom",
    "read_truth",
    "PhantomTruth",
    "DEFAULT_SIZE",
    "TRUTH_CSV",
    "TRUTH_JSON",
    "REGIONS_JSON",
    "Regions",
    "read_regions",
    "encode_mask",
    "decode_mask",
]
