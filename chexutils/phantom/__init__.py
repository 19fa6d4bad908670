"""The phantom CheXpert: a generated stand-in for the registration-only real data set.

This package's top level hands out the *readers* only (importing it never loads the renderer):
`read_truth(dir)` reads the sidecar (the true findings and the expected better policy per
observation), `read_regions(chexpert_dir)` where each sign was drawn (format in ``regions``).
The generator is ``chexutils.phantom.generate.generate_phantom(out, ...)``, which writes
``out/CheXpert-v1.0-small/`` with the real layout and schema; ``python -m chexutils phantom --out
DIR`` does the same from the shell.
"""

from chexutils.phantom.regions import REGIONS_JSON, Regions, decode_mask, encode_mask, read_regions
from chexutils.phantom.sidecar import TRUTH_CSV, TRUTH_JSON, PhantomTruth, read_truth

__all__ = [
    "read_truth",
    "PhantomTruth",
    "TRUTH_CSV",
    "TRUTH_JSON",
    "REGIONS_JSON",
    "Regions",
    "read_regions",
    "encode_mask",
    "decode_mask",
]
