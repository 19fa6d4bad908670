"""Path constants in one place, so notebooks and the runner agree where things live."""

from pathlib import Path

from chexutils.core.errors import DataError

PROJECT_ROOT = Path(__file__).resolve().parents[2]  # chexutils/core/paths.py -> the repository
DATA_DIR = PROJECT_ROOT / "data"
OUTPUT_DIR = PROJECT_ROOT / "output"
NOTEBOOK_DIR = PROJECT_ROOT / "notebooks"
CONFIG_DIR = PROJECT_ROOT / "configs"

SMALL_PREFIX = "CheXpert-v1.0-small"
FULL_PREFIX = "CheXpert-v1.0"


def resolve(path) -> Path:
    """A path from a notebook parameter: absolute as given, relative ones against the project root
    (so the same parameters work from JupyterLab, where the cwd is notebooks/, and from the runner)."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else PROJECT_ROOT / path


def find_chexpert(data_dir) -> Path:
    """The CheXpert folder inside ``data_dir`` (small release preferred), or a clear error."""

    data_dir = resolve(data_dir)
    for prefix in (SMALL_PREFIX, FULL_PREFIX):
        if (data_dir / prefix / "train.csv").is_file():
            return data_dir / prefix
    raise DataError(
        f"{data_dir}: no {SMALL_PREFIX}/train.csv or {FULL_PREFIX}/train.csv here; "
        f"expected the unzipped CheXpert release (docs/data.md), or generate the phantom CheXpert there: "
        f"python -m chexutils phantom --out {data_dir}"
    )
