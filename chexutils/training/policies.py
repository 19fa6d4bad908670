"""Uncertainty-label policies: turn raw CheXpert labels (1 / 0 / -1 / blank) into targets + a loss mask.

Policies follow the CheXpert paper (Irvin et al. 2019: U-Ignore, U-Zeros, U-Ones, U-SelfTrained,
U-MultiClass), the label smoothing of Pham et al. 2020 (U-LSR-Zeros / U-LSR-Ones) and the original study's
per-label choice of U-Zeros or U-Ones (``mixed``). Certain labels (1 / 0) are never changed; every
policy takes ``blank`` = "negative" (the paper's choice) or "ignore" (masked out of the loss).
Observations are addressed by name; the columns of `Targets` follow `OBSERVATIONS`.
"""

import hashlib
import inspect
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from chexutils.core.errors import DataError
from chexutils.core.labels import BINARY, MULTICLASS, NEGATIVE, OBSERVATIONS, POSITIVE, UNCERTAIN
from chexutils.core.paths import resolve
from chexutils.core.rundir import TRAIN, RunDir

BLANK_OPTIONS = ("negative", "ignore")
MULTICLASS_NEGATIVE, MULTICLASS_POSITIVE, MULTICLASS_UNCERTAIN = 0, 1, 2

# The original study's per-label winners between U-Zeros and U-Ones (its results tables; README, 'The original study').
ORIGINAL_MIXED_MAPPING: dict[str, str] = {
    name: "U-Ones"
    if name
    in ("Atelectasis", "Edema", "Pleural Effusion", "Lung Opacity", "Lung Lesion", "Fracture", "Support Devices")
    else "U-Zeros"
    for name in OBSERVATIONS
}


@dataclass(frozen=True)
class Targets:
    """Training targets (float32 in [0, 1] or int64 class ids) and a float32 loss mask, both (N, 14)."""

    values: np.ndarray
    mask: np.ndarray

    def __post_init__(self):
        if self.values.shape != self.mask.shape or self.values.ndim != 2:
            raise ValueError(f"values {self.values.shape} and mask {self.mask.shape} must be equal (N, K) shapes")


class Policy:
    """Base policy: certain labels kept, blanks per ``blank``; subclasses say what uncertain entries become."""

    name: str = ""
    head: str = BINARY

    def __init__(self, *, blank: str = "negative"):
        if blank not in BLANK_OPTIONS:
            raise ValueError(f"{self.name}: blank must be one of {', '.join(BLANK_OPTIONS)}, got {blank!r}")
        self.blank = blank

    def targets(self, frame: pd.DataFrame) -> Targets:
        """Targets and mask for every row of ``frame`` (label columns by name; the frame is not modified)."""
        raw = label_matrix(frame)
        dtype = np.float32 if self.head == BINARY else np.int64
        values = np.zeros(raw.shape, dtype)
        mask = np.ones(raw.shape, np.float32)
        values[raw == POSITIVE] = 1  # positive: 1.0 or class 1; negatives and blanks stay 0 (class 0)
        if self.blank == "ignore":
            mask[np.isnan(raw)] = 0.0
        uncertain = raw == UNCERTAIN
        if uncertain.any():
            self._fill_uncertain(frame, uncertain, values, mask)
        return Targets(values, mask)

    def _fill_uncertain(self, frame, uncertain, values, mask) -> None:
        """Write the targets (and mask) of the ``uncertain`` entries in place."""
        raise NotImplementedError

    def options(self) -> dict:
        """The resolved options, JSON-serialisable; ``get_policy(name, **options())`` rebuilds the policy."""
        return {"blank": self.blank}

    def describe(self) -> dict:
        """Name and resolved options, for a run's config.json."""
        return {"name": self.name, **self.options()}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.describe().items())})"


POLICIES: dict[str, type[Policy]] = {}


def register_policy(name: str):
    """Class decorator adding a policy builder to `POLICIES` under ``name``; a duplicate name fails."""

    def add(builder):
        if name in POLICIES:
            raise ValueError(f"policy {name!r} is already registered (by {POLICIES[name].__name__})")
        builder.name = name
        POLICIES[name] = builder
        return builder

    return add


def get_policy(name: str, **options) -> Policy:
    """Build the registered policy ``name`` with ``options``; unknown names and options fail loudly."""
    if name not in POLICIES:
        raise KeyError(f"unknown policy {name!r}; known policies: {', '.join(POLICIES)}")
    builder = POLICIES[name]
    accepted = [p for p in inspect.signature(builder).parameters if p not in ("self", "args", "kwargs")]
    unknown = [k for k in options if k not in accepted]
    if unknown:
        raise TypeError(
            f"policy {name!r} got unknown option(s) {', '.join(map(repr, unknown))}; accepted: {', '.join(accepted)}"
        )
    return builder(**options)


def label_matrix(frame: pd.DataFrame) -> np.ndarray:
    """The (N, 14) float label matrix of ``frame`` in `OBSERVATIONS` order; bad columns or values are a DataError."""
    missing = [name for name in OBSERVATIONS if name not in frame.columns]
    if missing:
        raise DataError(f"frame: missing observation column(s) {', '.join(map(repr, missing))}")
    try:
        raw = frame.loc[:, list(OBSERVATIONS)].to_numpy(dtype=float, na_value=np.nan)
    except (TypeError, ValueError) as err:
        raise DataError(f"frame: label columns must be numeric 1.0 / 0.0 / -1.0 / NaN ({err})") from None
    bad = ~(np.isnan(raw) | np.isin(raw, (POSITIVE, NEGATIVE, UNCERTAIN)))
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise DataError(
            f"frame: {int(bad.sum())} label value(s) outside 1.0 / 0.0 / -1.0 / NaN, first "
            f"{raw[row, col]!r} in column {OBSERVATIONS[col]!r} at row {row}"
        )
    return raw


def _paths(frame: pd.DataFrame, policy: str) -> np.ndarray:
    """The ``Path`` column as strings (policies keyed by image need it)."""
    if "Path" not in frame.columns:
        raise DataError(f"frame: policy {policy!r} needs a 'Path' column to key targets by image")
    return frame["Path"].astype(str).to_numpy()


@register_policy("U-Ignore")
class UIgnore(Policy):
    """Uncertain entries are left out of the loss (CheXpert paper's U-Ignore)."""

    def _fill_uncertain(self, frame, uncertain, values, mask):
        values[uncertain] = 0.0
        mask[uncertain] = 0.0


class _Fill(Policy):
    """Uncertain entries become the constant ``fill``."""

    fill: float

    def _fill_uncertain(self, frame, uncertain, values, mask):
        values[uncertain] = self.fill


@register_policy("U-Zeros")
class UZeros(_Fill):
    """Uncertain -> 0 (negative)."""

    fill = 0.0


@register_policy("U-Ones")
class UOnes(_Fill):
    """Uncertain -> 1 (positive)."""

    fill = 1.0


@register_policy("U-MultiClass")
class UMultiClass(Policy):
    """Three-class head: class 0 negative, 1 positive, 2 uncertain (blank -> class 0 or masked)."""

    head = MULTICLASS

    def _fill_uncertain(self, frame, uncertain, values, mask):
        values[uncertain] = MULTICLASS_UNCERTAIN


@register_policy("mixed")
class Mixed(Policy):
    """Per-observation choice of U-Zeros or U-Ones; default: the original study's per-label winners.

    ``mapping`` is a dict or the path of a JSON file {observation: "U-Zeros" | "U-Ones"}, such as
    the ``mixed_mapping.json`` that notebook 05 writes (see `read_mapping`)."""

    def __init__(self, *, mapping: dict | str | Path | None = None, blank: str = "negative"):
        super().__init__(blank=blank)
        if isinstance(mapping, (str, Path)):
            mapping = read_mapping(mapping)
        mapping = dict(ORIGINAL_MIXED_MAPPING if mapping is None else mapping)
        unknown = [k for k in mapping if k not in OBSERVATIONS]
        if unknown:
            raise ValueError(
                f"mixed: unknown observation(s) {', '.join(map(repr, unknown))}; known: {', '.join(OBSERVATIONS)}"
            )
        choices = {"U-Zeros": 0.0, "U-Ones": 1.0}
        wrong = {k: v for k, v in mapping.items() if v not in choices}
        if wrong:
            raise ValueError(f"mixed: each observation maps to 'U-Zeros' or 'U-Ones', got {wrong}")
        absent = [name for name in OBSERVATIONS if name not in mapping]
        if absent:
            raise ValueError(
                f"mixed: mapping lacks observation(s) {', '.join(map(repr, absent))}; name every observation explicitly"
            )
        self.mapping = {name: mapping[name] for name in OBSERVATIONS}
        self._fills = np.array([choices[self.mapping[name]] for name in OBSERVATIONS], np.float32)

    def _fill_uncertain(self, frame, uncertain, values, mask):
        values[uncertain] = np.broadcast_to(self._fills, values.shape)[uncertain]

    def options(self):
        return {"mapping": dict(self.mapping), **super().options()}


MAPPING_CHOICES = ("U-Zeros", "U-Ones")


def read_mapping(path) -> dict[str, str]:
    """A ``mixed`` mapping file: a JSON object naming every observation once, each "U-Zeros" or "U-Ones".

    Relative paths resolve against the project root. Any problem is a DataError naming the file and,
    where it can, the 1-based line."""

    path = resolve(path)
    if not path.is_file():
        raise DataError(
            f"{path}: mixed mapping file does not exist; expected a JSON object "
            "{observation: 'U-Zeros' or 'U-Ones'} such as the mixed_mapping.json notebook 05 writes"
        )
    text = path.read_text()
    try:
        mapping = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path} line {err.lineno}: not valid JSON ({err.msg})") from None
    if not isinstance(mapping, dict):
        raise DataError(
            f"{path} line 1: expected a JSON object {{observation: 'U-Zeros' or 'U-Ones'}}, "
            f"got {type(mapping).__name__}"
        )
    for key, value in mapping.items():
        if key not in OBSERVATIONS:
            raise DataError(
                f"{path} line {_line_of(text, key)}: unknown observation {key!r}; "
                f"expected one of {', '.join(OBSERVATIONS)}"
            )
        if value not in MAPPING_CHOICES:
            raise DataError(
                f"{path} line {_line_of(text, key)}: {key!r} maps to {value!r}; expected {' or '.join(MAPPING_CHOICES)}"
            )
    absent = [name for name in OBSERVATIONS if name not in mapping]
    if absent:
        raise DataError(
            f"{path}: mapping lacks observation(s) {', '.join(map(repr, absent))}; "
            "expected every observation named once"
        )
    return {name: mapping[name] for name in OBSERVATIONS}


def _line_of(text: str, key: str) -> int:
    """1-based line of the first ``"key"`` in a JSON text (1 when not found as written)."""
    at = text.find(json.dumps(key))
    return text.count("\n", 0, at) + 1 if at >= 0 else 1


class _LabelSmoothing(Policy):
    """Uncertain entries drawn uniformly from [low, high], one fixed draw per (Path, observation, seed)."""

    default_range: tuple[float, float]

    def __init__(self, *, seed: int = 0, low: float | None = None, high: float | None = None, blank: str = "negative"):
        super().__init__(blank=blank)
        low = self.default_range[0] if low is None else float(low)
        high = self.default_range[1] if high is None else float(high)
        if not 0.0 <= low <= high <= 1.0:
            raise ValueError(f"{self.name}: need 0 <= low <= high <= 1, got low={low}, high={high}")
        self.seed, self.low, self.high = int(seed), low, high

    def _fill_uncertain(self, frame, uncertain, values, mask):
        rows, cols = np.nonzero(uncertain)
        paths = _paths(frame, self.name)
        u = entry_uniforms(paths[rows], cols, self.seed)
        values[rows, cols] = (self.low + u * (self.high - self.low)).astype(np.float32)

    def options(self):
        return {"seed": self.seed, "low": self.low, "high": self.high, **super().options()}


@register_policy("U-LSR-Zeros")
class ULSRZeros(_LabelSmoothing):
    """Label smoothing towards 0: uncertain ~ U(0, 0.3) (Pham et al. 2020)."""

    default_range = (0.0, 0.3)


@register_policy("U-LSR-Ones")
class ULSROnes(_LabelSmoothing):
    """Label smoothing towards 1: uncertain ~ U(0.55, 0.85) (Pham et al. 2020)."""

    default_range = (0.55, 0.85)


def entry_uniforms(paths: np.ndarray, columns: np.ndarray, seed: int) -> np.ndarray:
    """Uniform [0, 1) numbers fixed per (Path, observation column, seed), independent of row order and of other rows.

    ``np.random.default_rng(seed)`` draws one 64-bit key per observation; each entry's number is
    the splitmix64 finaliser of (stable hash of its Path) XOR (its observation's key).
    """
    keys = np.random.default_rng(seed).integers(0, 2**64, size=len(OBSERVATIONS), dtype=np.uint64, endpoint=False)
    inverse, unique = pd.factorize(pd.Series(paths, dtype=object), sort=False)
    hashes = np.array(
        [int.from_bytes(hashlib.blake2b(p.encode(), digest_size=8).digest(), "little") for p in unique], dtype=np.uint64
    )
    z = hashes[inverse] ^ keys[np.asarray(columns, dtype=np.intp)]
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


@register_policy("U-SelfTrained")
class USelfTrained(Policy):
    """Uncertain entries get a teacher's predicted probability for that image (joined by Path); ``hard`` thresholds at 0.5.

    The teacher is a finished run directory holding ``predictions_train.csv`` (``teacher``) or that
    table as a DataFrame (``teacher_predictions``); the CheXpert paper's teacher is a U-Ignore run.
    Only rows holding an uncertain entry need a teacher prediction.
    """

    def __init__(
        self,
        *,
        teacher=None,
        teacher_predictions: pd.DataFrame | None = None,
        hard: bool = False,
        blank: str = "negative",
    ):
        super().__init__(blank=blank)
        if (teacher is None) == (teacher_predictions is None):
            raise ValueError(
                "U-SelfTrained: give exactly one of teacher (a run directory) or teacher_predictions (a DataFrame)"
            )
        if not isinstance(hard, bool):
            raise ValueError(f"U-SelfTrained: hard must be True or False, got {hard!r}")
        self.hard = hard
        if teacher is not None:
            self.teacher = str(teacher)
            self.source = str(RunDir(teacher).predictions(TRAIN))
            teacher_predictions = _read_teacher(Path(self.source))
        else:
            self.teacher = None
            self.source = "teacher_predictions"
        self._index, self._probs = _check_teacher(teacher_predictions, self.source)

    def _fill_uncertain(self, frame, uncertain, values, mask):
        paths = _paths(frame, self.name)
        needed = uncertain.any(axis=1)
        where = self._index.get_indexer(paths[needed])
        if (where < 0).any():
            lost = pd.unique(paths[needed][where < 0])
            raise DataError(
                f"{self.source}: no teacher prediction for {len(lost)} image Path(s) with uncertain labels, "
                f"first {', '.join(map(repr, lost[:3]))}; was the teacher run on the same train split?"
            )
        probs = np.zeros(values.shape, np.float64)
        probs[needed] = self._probs[where]
        soft = probs[uncertain]
        values[uncertain] = (soft >= 0.5).astype(np.float32) if self.hard else soft.astype(np.float32)

    def options(self):
        source = self.teacher if self.teacher is not None else f"in-memory DataFrame ({len(self._index)} rows)"
        key = "teacher" if self.teacher is not None else "teacher_predictions"
        return {key: source, "hard": self.hard, **super().options()}


def _read_teacher(path: Path) -> pd.DataFrame:
    """Read a teacher's predictions CSV; a missing or unreadable file is a DataError naming it."""
    if not path.is_file():
        raise DataError(
            f"{path}: teacher predictions file does not exist; expected a finished run directory "
            f"holding predictions_train.csv (Path + one probability column per observation)"
        )
    try:
        return pd.read_csv(path, dtype={"Path": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not a readable predictions CSV ({err})") from None


def _check_teacher(table: pd.DataFrame, source: str) -> tuple[pd.Index, np.ndarray]:
    """Path index and (M, 14) probability matrix of a teacher table; missing columns, duplicates or bad values fail."""
    if not isinstance(table, pd.DataFrame):
        raise DataError(f"{source}: expected a DataFrame of teacher predictions, got {type(table).__name__}")
    missing = [c for c in ("Path", *OBSERVATIONS) if c not in table.columns]
    if missing:
        raise DataError(
            f"{source}: missing column(s) {', '.join(map(repr, missing))}; "
            "expected Path + one probability column per observation"
        )
    index = pd.Index(table["Path"].astype(str))
    if index.has_duplicates:
        dup = index[index.duplicated()].unique()
        raise DataError(f"{source}: {len(dup)} duplicate Path(s), first {dup[0]!r}; expected one prediction per image")
    try:
        probs = table.loc[:, list(OBSERVATIONS)].to_numpy(dtype=float, na_value=np.nan)
    except (TypeError, ValueError) as err:
        raise DataError(f"{source}: probability columns must be numeric ({err})") from None
    bad = ~((probs >= 0.0) & (probs <= 1.0))  # also catches NaN
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise DataError(
            f"{source}: {int(bad.sum())} value(s) not a probability in [0, 1], first {probs[row, col]!r} "
            f"in column {OBSERVATIONS[col]!r} for Path {index[row]!r}"
        )
    return index, probs
