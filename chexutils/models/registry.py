"""The backbone registry: a name -> how to build it. Imports nothing of the package.

Each backbone module registers its own entries when imported (``chexutils.models`` imports them
all, so ``from chexutils.models.registry import BACKBONES`` sees every one). Adding a backbone is a
``register_backbone(Backbone(...))`` in its module plus the parametrised registry tests.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Backbone:
    """A registry entry: how to build a feature extractor and where its weights would live."""

    name: str
    build: Callable[[str | None], tuple[Any, int]]  # pretrained -> (features, num_features)
    min_size: int  # smallest image side the backbone accepts
    pretrained_file: str | None  # file name in pretrained_cache_dir(); None: no weights exist
    source: str  # one line: where the architecture (and weights) come from
    pretrained_url: str | None = None  # where pretrained_file would be downloaded from


BACKBONES: dict[str, Backbone] = {}


def register_backbone(spec: Backbone) -> Backbone:
    """Add ``spec`` to BACKBONES; a name can be registered only once."""
    if spec.name in BACKBONES:
        raise ValueError(f"backbone {spec.name!r} is already registered")
    BACKBONES[spec.name] = spec
    return spec


def get_backbone(name: str) -> Backbone:
    """Look up a registered backbone, failing with the list of known names."""
    if name not in BACKBONES:
        raise KeyError(f"unknown backbone {name!r}; known: {', '.join(sorted(BACKBONES))}")
    return BACKBONES[name]
