"""The run folder, the unit of record: one object owns its file names, its config and its sweep.

    output/<sweep>/<run>/
        config.json                   every resolved parameter + versions (RunDir.config())
        history.csv                   one row per epoch
        checkpoint.pt                 the latest epoch, for resuming
        best.pt                       the selected epoch (by select_metric on the selection set)
        predictions_<set>.csv         image-level probabilities, one column per observation
        metrics_<set>.json / .csv     study-level metrics with their counts and CIs
        radiologists_<set>.csv / .json  the model against each radiologist operating point
        calibration.csv               ECE / Brier per set x scaling x observation (+ reliability.png)
        operating_points.csv          thresholds chosen on one set, reported on another
        localisation[_images].csv     Grad-CAM heatmaps scored against the phantom's drawn signs
        heatmaps/                     overlay PNGs (+ heatmaps.csv)
        <name>.png                    figures: learning_curves, roc, pr, ...

``<set>`` is one of the evaluation-set names of ``EVAL_SETS``, or ``external_<dataset>`` (a registered data set's
evaluation split, ``external_set``). No other module spells these file
names: adding a file to the run folder is one property here.
"""

import json
import re
from dataclasses import dataclass
from pathlib import Path

from chexutils.core.errors import DataError

# The three evaluation sets (README, "Evaluation sets") plus the two parts of the re-split a run trains on.
OFFICIAL_VALID = "official_valid"  # radiologist-labelled (phantom: the truth); for choosing
OFFICIAL_TEST = "official_test"  # radiologist-labelled; for reporting once, after every choice
HELD_OUT = "held_out"  # patients of the re-split never trained on, report labels; secondary checks
SELECT = "select"  # patients of the re-split held out from training to choose best.pt
TRAIN = "train"  # the training CSV itself (a U-SelfTrained teacher needs its predictions)
EVAL_SETS = {
    OFFICIAL_VALID: "official valid (radiologist-labelled; the phantom's truth)",
    OFFICIAL_TEST: "official test (radiologist-labelled; reported once)",
    HELD_OUT: "held-out patients of the re-split (report labels)",
    SELECT: "checkpoint-selection patients of the re-split (report labels)",
    TRAIN: "the training set",
}
# Run folders written before the evaluation sets had names: what their files meant.
LEGACY_NAMES = {
    ("predictions", OFFICIAL_VALID): "predictions_valid.csv",
    ("predictions", HELD_OUT): "predictions_test.csv",
    ("metrics", OFFICIAL_VALID): "metrics.json",
    ("metrics", HELD_OUT): "metrics_test.json",
}


EXTERNAL_PREFIX = "external_"  # + a registered data set's name: its evaluation split (evaluation/external.py)


def external_set(dataset: str) -> str:
    """The evaluation-set name of a data set's evaluation split, e.g. ``external_mimic_cxr_jpg``."""
    return EXTERNAL_PREFIX + re.sub(r"[^0-9a-z]+", "_", dataset.lower()).strip("_")


def check_eval_set(name: str) -> str:
    """``name`` if it is an evaluation-set name (or an ``external_<dataset>`` one), else a DataError listing the names."""
    if name not in EVAL_SETS and not re.fullmatch(EXTERNAL_PREFIX + r"[0-9a-z_]+", name):
        raise DataError(f"unknown evaluation set {name!r}; known: {', '.join(EVAL_SETS)} or {EXTERNAL_PREFIX}<dataset>")
    return name


@dataclass(frozen=True)
class RunDir:
    """One run's folder. ``RunDir(path).best`` is its selected checkpoint, and so on."""

    path: Path

    def __init__(self, path):
        object.__setattr__(self, "path", Path(path))

    def __fspath__(self) -> str:
        return str(self.path)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config_file(self) -> Path:
        return self.path / "config.json"

    @property
    def history(self) -> Path:
        return self.path / "history.csv"

    @property
    def checkpoint(self) -> Path:
        return self.path / "checkpoint.pt"

    @property
    def best(self) -> Path:
        return self.path / "best.pt"

    @property
    def lock(self) -> Path:
        return self.path / ".lock"

    def predictions(self, eval_set: str) -> Path:
        """``predictions_<set>.csv``; for an old run folder, the legacy file when only that exists."""
        return self._named("predictions", eval_set, ".csv")

    def metrics(self, eval_set: str) -> Path:
        """``metrics_<set>.json`` (the per-observation table is the same name with .csv)."""
        return self._named("metrics", eval_set, ".json")

    def radiologists(self, eval_set: str) -> Path:
        """``radiologists_<set>.csv``: the model against each radiologist (the same name with .json too)."""
        return self.path / f"radiologists_{check_eval_set(eval_set)}.csv"

    @property
    def calibration(self) -> Path:
        return self.path / "calibration.csv"

    @property
    def operating_points(self) -> Path:
        return self.path / "operating_points.csv"

    @property
    def localisation(self) -> Path:
        return self.path / "localisation.csv"

    @property
    def localisation_images(self) -> Path:
        return self.path / "localisation_images.csv"

    @property
    def heatmaps(self) -> Path:
        return self.path / "heatmaps"

    def figure(self, name: str) -> Path:
        return self.path / f"{name}.png"

    def config(self) -> dict:
        """The resolved config.json training wrote; a DataError when the run has none."""

        if not self.config_file.is_file():
            raise DataError(f"{self.config_file}: file does not exist; expected a training run's config")
        try:
            return json.loads(self.config_file.read_text())
        except ValueError as err:
            raise DataError(f"{self.config_file}: not valid JSON ({err})") from None

    def run_files(self) -> list[Path]:
        """The files (and the heatmaps/ folder) of a run that exist now: its training state and everything
        derived from it (the layout above). What replacing a run must remove so nothing stale remains."""
        named = [self.config_file, self.history, self.checkpoint, self.best, self.calibration]
        named += [self.operating_points, self.localisation, self.localisation_images, self.heatmaps]
        patterns = ("predictions*.csv", "metrics*.json", "metrics*.csv", "radiologists_*.csv", "radiologists_*.json")
        globbed = [p for pattern in patterns for p in sorted(self.path.glob(pattern))]
        figures = sorted(self.path.glob("*.png"))
        return [p for p in dict.fromkeys(named + globbed + figures) if p.exists() or p.is_symlink()]

    def holds_run(self) -> bool:
        """Any of a run's training files is here: config.json, best.pt, checkpoint.pt or history.csv."""
        return any(p.exists() for p in (self.config_file, self.best, self.checkpoint, self.history))

    def is_finished(self) -> bool:
        """Training finished: config.json and best.pt are both there."""
        return self.config_file.is_file() and self.best.is_file()

    def _named(self, kind: str, eval_set: str, suffix: str) -> Path:
        current = self.path / f"{kind}_{check_eval_set(eval_set)}{suffix}"
        legacy = LEGACY_NAMES.get((kind, eval_set))
        if legacy and not current.exists() and (self.path / legacy).exists():
            return self.path / legacy
        return current


def find_runs(sweep_dir) -> list[RunDir]:
    """The finished runs of a sweep (folders with config.json and best.pt), sorted by name."""
    return [run for run in map(RunDir, sorted(Path(sweep_dir).glob("*/"))) if run.is_finished()]
