"""Predictions from anywhere as study-level scores: a run's image-level CSV (keyed by ``Path``) or an
outside model's CSV keyed by ``Study`` (as the leaderboard's example models publish theirs, with
probability columns for any subset of the 14 observations); and the mean of several where keys match.
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd

from chexutils.core.errors import DataError, csv_lines
from chexutils.core.io import write_json, write_table
from chexutils.core.labels import OBSERVATIONS
from chexutils.core.rundir import OFFICIAL_TEST, RunDir
from chexutils.data.test_set_files import (
    EXPECTED_PATH,
    EXPECTED_STUDY,
    IMAGE_PATTERN,
    STUDY_PATTERN,
    parse_keys,
)

SOURCE_JSON = "external.json"  # in an external run's folder: where its predictions came from


def study_scores(path, studies=None) -> pd.DataFrame:
    """Study x observation scores from a predictions CSV keyed by ``Path`` (max over a study's images) or ``Study``.

    Only the observation columns present are kept (by name). With ``studies`` (the labelled study keys),
    a labelled study without a prediction or a predicted study without a label is a DataError.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file does not exist; expected a predictions CSV keyed by Study or Path")
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not a readable CSV ({err})") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    observations = [o for o in OBSERVATIONS if o in frame.columns]
    if "Path" not in frame.columns and "Study" not in frame.columns or not observations:
        raise DataError(
            f"{path} line 1: columns {list(frame.columns)[:6]}...; expected a Study or Path column and "
            "at least one probability column named like an observation (e.g. 'Edema')"
        )
    values = frame[observations].apply(pd.to_numeric, errors="coerce")
    bad = ~np.isfinite(values.to_numpy(float)).all(axis=1)
    if bad.any():
        raise DataError(
            f"{path} {csv_lines(np.flatnonzero(bad))}: a prediction is blank or not a number; "
            "expected a finite score in every observation column"
        )
    if "Path" in frame.columns:
        keys = parse_keys(frame["Path"].astype(str), IMAGE_PATTERN, path, "Path", EXPECTED_PATH)["key"]
        scores = values.groupby(keys.to_numpy()).max()
    else:
        keys = parse_keys(frame["Study"].astype(str), STUDY_PATTERN, path, "Study", EXPECTED_STUDY)["key"]
        dup = keys.duplicated(keep=False).to_numpy()
        if dup.any():
            raise DataError(
                f"{path} {csv_lines(np.flatnonzero(dup))}: study {keys[dup].iloc[0]!r} twice; "
                "expected one row per study"
            )
        scores = values.set_axis(keys.to_numpy())
    scores.index.name = "study"
    if studies is not None:
        _check_covers(scores.index, pd.Index(studies), path)
    return scores


def _check_covers(predicted: pd.Index, labelled: pd.Index, path: Path) -> None:
    missing, extra = labelled.difference(predicted), predicted.difference(labelled)
    if len(missing):
        raise DataError(
            f"{path}: no prediction for {len(missing)} labelled stud{'y' if len(missing) == 1 else 'ies'} "
            f"(first: {missing[0]!r}); expected a score for every study of the evaluation set"
        )
    if len(extra):
        raise DataError(
            f"{path}: {len(extra)} predicted stud{'y is' if len(extra) == 1 else 'ies are'} not in the "
            f"evaluation set (first: {extra[0]!r}); expected predictions for the same set"
        )


def ensemble(members: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Mean score over the members, on the studies and observations every member has."""
    if not members:
        raise DataError("an ensemble needs at least one member")
    frames = list(members.values())
    studies = frames[0].index
    observations = [o for o in frames[0].columns if all(o in f.columns for f in frames)]
    for frame in frames[1:]:
        studies = studies.intersection(frame.index)
    if not len(studies) or not observations:
        raise DataError(f"members {list(members)} share no study and observation; an ensemble needs matching keys")
    return sum(f.loc[studies, observations] for f in frames) / len(frames)


def import_predictions(csv, run_dir, eval_set: str = OFFICIAL_TEST, studies=None) -> RunDir:
    """Make an outside model's predictions a run folder: study-level scores in ``predictions_<set>.csv``."""
    scores = study_scores(csv, studies)
    run = write_study_predictions(scores, run_dir, eval_set)
    write_json(
        run.path / SOURCE_JSON,
        {"source": str(Path(csv).resolve()), "eval_set": eval_set, "observations": list(scores.columns)},
    )
    return run


def write_study_predictions(scores: pd.DataFrame, run_dir, eval_set: str = OFFICIAL_TEST) -> RunDir:
    """Study-level scores as ``predictions_<set>.csv`` keyed by ``Study`` (the released test set's key)."""
    run = RunDir(run_dir)
    folder = "test" if eval_set == OFFICIAL_TEST else "valid"
    table = scores.rename_axis("study").reset_index()
    table.insert(0, "Study", f"CheXpert-v1.0/{folder}/" + table.pop("study"))
    write_table(table, run.predictions(eval_set), index=False, float_format="%.6f")
    return run


def is_external(run_dir) -> bool:
    """Whether a folder holds imported outside predictions rather than a trained run."""
    return (Path(run_dir) / SOURCE_JSON).is_file()


def source(run_dir) -> dict:
    return json.loads((Path(run_dir) / SOURCE_JSON).read_text())
