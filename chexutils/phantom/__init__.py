"""The phantom CheXpert: a generated stand-in for the registration-only real data set.

`generate_phantom(out, ...)` writes ``out/CheXpert-v1.0-small/`` with the real layout and
schema; ``python -m chexutils.phantom --out DIR`` does the same from the shell.
"""

from .generate import DEFAULT_SIZE, TRUTH_CSV, TRUTH_JSON, generate_phantom

__all__ = ["generate_phantom", "DEFAULT_SIZE", "TRUTH_CSV", "TRUTH_JSON"]
