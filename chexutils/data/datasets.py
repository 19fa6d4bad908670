"""The dataset registry: a name -> how to read that data set. Imports nothing of the readers.

Each reader module registers its own entry when imported (``chexutils.data`` imports them all, so
``from chexutils.data.datasets import DATASETS`` sees every one). Registered now: ``chexpert``
(``data/chexpert.py``) and ``mimic-cxr-jpg`` (``data/mimic.py``). Adding a data set is a reader
module ending in ``register_dataset(DatasetSpec(...))``, its import in ``chexutils/data/__init__.py``
and its tiny release writer in the registry test (``tests/test_mimic.py::RELEASE_WRITERS``).

Every reader returns one row per image in the CheXpert reader's shape — ``image`` (absolute path),
``patient``, ``study``, ``view`` (the data set's own view label), ``frontal`` (bool), ``folder``,
``split`` (the data set's split name), ``line`` (CSV line of the image) and the 14 observations as
float 1.0 / 0.0 / -1.0 / NaN — so the loaders, policies and evaluation apply unchanged. Training on a
data set goes through a CheXpert-schema CSV of its split (``data/site_csv``), readable by the CheXpert
reader thanks to the entry's ``path_pattern``.

    from chexutils.data.datasets import read_dataset
    frame = read_dataset("mimic-cxr-jpg", "data/mimic-cxr-jpg", split="validate", views="frontal")
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chexutils.core.paths import resolve

VIEW_GROUPS = ("frontal", "lateral")  # the view names every reader accepts (besides its own view values)


@dataclass(frozen=True)
class DatasetSpec:
    """A registry entry: how to read a data set, which splits it has, where it lives by default."""

    name: str
    read: Callable[..., Any]  # read(root, split=None, views=None, check_files=True) -> frame
    description: str  # one line: what it is and where it comes from
    splits: tuple[str, ...]  # the split names ``read`` accepts, as the release names them
    default_root: str  # the folder docs/data.md puts the release in, relative to the project root
    train_split: str = "train"  # the split a model trains on (cross-site evaluation, evaluation/external.py)
    eval_split: str = ""  # the split a model is evaluated on at another site ("": the last of ``splits``)
    # The image layout, for CheXpert-schema training CSVs of this data set (``data/site_csv``): a regex on the
    # CSV's Path with groups ``patient``, ``study``, ``view``; the CheXpert reader accepts such Paths and names
    # their patients ``<name>/<patient>`` ("" : the data set's images cannot go into a training CSV).
    path_pattern: str = ""

    @property
    def evaluation_split(self) -> str:
        return self.eval_split or self.splits[-1]


DATASETS: dict[str, DatasetSpec] = {}


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    """Add ``spec`` to DATASETS; a name can be registered only once."""
    if spec.name in DATASETS:
        raise ValueError(f"dataset {spec.name!r} is already registered")
    DATASETS[spec.name] = spec
    return spec


def get_dataset(name: str) -> DatasetSpec:
    """Look up a registered data set, failing with the list of known names."""
    if name not in DATASETS:
        raise KeyError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}")
    return DATASETS[name]


def read_dataset(name: str, root=None, split=None, views=None, check_files: bool = True):
    """Read the data set ``name`` from ``root`` (default: its ``default_root``).

    ``split``: None (every split) or one or more of the data set's ``splits``; ``views``: None (all)
    or one or more of ``frontal`` / ``lateral`` or the data set's own view values (e.g. ``PA``).
    """
    spec = get_dataset(name)
    if split is not None:
        asked = (split,) if isinstance(split, str) else tuple(split)
        unknown = [s for s in asked if s not in spec.splits]
        if unknown or not asked:
            raise ValueError(
                f"dataset {name!r} has no split {', '.join(map(repr, unknown)) or '(none given)'}; known: {', '.join(spec.splits)}"
            )
    return spec.read(
        resolve(root if root is not None else spec.default_root), split=split, views=views, check_files=check_files
    )
