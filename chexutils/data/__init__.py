"""Data: readers of the released data sets (each registers itself in ``datasets``), pixels, caches, loaders."""

from chexutils.data import chexpert, mimic  # noqa: F401  registers chexpert and mimic-cxr-jpg in DATASETS
