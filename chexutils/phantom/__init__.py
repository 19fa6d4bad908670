"""The phantom CheXpert: a generated stand-in for the registration-only real data set.

`generate_phantom(out, ...)` writes ``out/CheXpert-v1.0-small/`` with the real layout and
schema; ``python -m chexutils.phantom --out DIR`` does the same from the shell. `read_truth(dir)`
reads its sidecar: the true findings and the expected better policy per observation.
"""

from .generate import DEFAULT_SIZE, generate_phantom
from .sidecar import TRUTH_CSV, TRUTH_JSON, PhantomTruth, read_truth

__all__ = ["generate_phantom", "read_truth", "PhantomTruth", "DEFAULT_SIZE", "TRUTH_CSV", "TRUTH_JSON"]
