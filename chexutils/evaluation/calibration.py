"""Calibration per observation at study level: reliability curves, expected calibration error (ECE),
Brier score, and post-hoc temperature / Platt scaling fitted on one evaluation set and applied to another.

Why: the uncertainty policies differ more in calibration than in AUROC (U-Ones pushes equivocal
images' probabilities up), and a probability is only read as a probability once it is calibrated.
Scores are the study-level ones used everywhere (max over a study's images); labels are certain
only (1 positive; 0 and blank negative; uncertain left out), as in ``metrics.certain_scores``.
"""

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar
from sklearn.calibration import CalibrationDisplay
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss

from chexutils.core.errors import DataError
from chexutils.core.io import save_figure, write_table
from chexutils.core.labels import COMPETITION_TASKS, OBSERVATIONS
from chexutils.core.rundir import OFFICIAL_VALID, RunDir
from chexutils.evaluation.evaluate import RunScores
from chexutils.scoring.metrics import certain_scores

N_BINS = 10
BINNING = (
    f"{N_BINS} equal-width bins on [0, 1], right-closed like scikit-learn's calibration_curve "
    "(0.1 falls in the first bin), each bin weighted by its share of the studies"
)
METHODS = ("temperature", "platt")
EPS = 1e-6  # probabilities are clipped to [EPS, 1 - EPS] before taking logits (the CSVs hold 6 decimals)
CALIBRATION_COLUMNS = (
    "set",
    "scaling",
    "observation",
    "n",
    "positives",
    "prevalence",
    "mean_score",
    "ece",
    "brier",
    "temperature",
    "slope",
    "intercept",
    "note",
)


# ----------------------------------------------------------------------------------------------
# Measures


def bin_table(y, p, n_bins: int = N_BINS) -> pd.DataFrame:
    """Per equal-width bin: count, mean predicted probability and fraction of positives (NaN when empty).

    Bin edges are ``linspace(0, 1, n_bins + 1)`` and a value on an inner edge goes to the lower bin,
    exactly as ``sklearn.calibration.calibration_curve(strategy='uniform')`` assigns them.
    """
    y, p = np.asarray(y, float), np.asarray(p, float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    ids = np.searchsorted(edges[1:-1], p)  # side='left': (a, b] bins, the first one closed at 0
    count = np.bincount(ids, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.bincount(ids, weights=p, minlength=n_bins) / count
        frac = np.bincount(ids, weights=y, minlength=n_bins) / count
    return pd.DataFrame(
        {"low": edges[:-1], "high": edges[1:], "count": count, "mean_predicted": mean_p, "fraction_positive": frac}
    )


def expected_calibration_error(y, p, n_bins: int = N_BINS) -> float:
    """ECE = sum over bins of (bin count / N) * |fraction positive - mean predicted| (see ``BINNING``)."""
    if len(y) == 0:
        return math.nan
    bins = bin_table(y, p, n_bins)
    filled = bins[bins["count"] > 0]
    gaps = (filled["fraction_positive"] - filled["mean_predicted"]).abs()
    return float((filled["count"] * gaps).sum() / filled["count"].sum())


def brier_score(y, p) -> float:
    """Mean squared difference between probability and 0/1 label (scikit-learn), NaN when empty."""
    return float(brier_score_loss(np.asarray(y, int), np.asarray(p, float), labels=[0, 1])) if len(y) else math.nan


def calibration_table(labels: pd.DataFrame, scores: pd.DataFrame, observations=OBSERVATIONS) -> pd.DataFrame:
    """One row per observation: n, positives, prevalence, mean score, ECE and Brier on certain labels.

    Unlike AUROC, both are defined with one class present (e.g. all negative), so no row is NaN
    unless the observation has no certain label at all.
    """
    rows = {}
    for obs in observations:
        y, p = certain_scores(labels[obs], scores.loc[labels.index, obs])
        rows[obs] = {
            "n": len(y),
            "positives": int(y.sum()),
            "prevalence": float(y.mean()) if len(y) else math.nan,
            "mean_score": float(p.mean()) if len(y) else math.nan,
            "ece": expected_calibration_error(y, p),
            "brier": brier_score(y, p),
            "note": "" if len(y) else "no certain label",
        }
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "observation"
    return table


# ----------------------------------------------------------------------------------------------
# Post-hoc scaling


def to_logits(p) -> np.ndarray:
    """log(p / (1 - p)), clipped at ``EPS``. For both heads this is the model's margin (the 3-class head's
    p1 is a softmax over {p0, p1}, i.e. sigmoid(z1 - z0)), so scaling it is temperature scaling of the model."""
    p = np.clip(np.asarray(p, float), EPS, 1 - EPS)
    return np.log(p) - np.log1p(-p)


def _sigmoid(z) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(z, float)))


def fit_temperature(logits, y) -> float:
    """The T > 0 minimising the mean negative log-likelihood of sigmoid(logits / T) (Guo et al. 2017),
    searched over log T in [-5, 5] with scipy's bounded scalar minimiser."""
    z, y = np.asarray(logits, float), np.asarray(y, float)

    def nll(log_t):
        q = z / math.exp(log_t)
        return float(np.mean(np.logaddexp(0.0, q) - y * q))  # -[y log s(q) + (1 - y) log(1 - s(q))]

    return math.exp(minimize_scalar(nll, bounds=(-5.0, 5.0), method="bounded", options={"xatol": 1e-6}).x)


def fit_platt(logits, y) -> tuple[float, float]:
    """(slope, intercept) of a logistic regression of y on the logit (Platt 1999), unpenalised in effect."""
    model = LogisticRegression(C=1e8, max_iter=1000).fit(np.asarray(logits, float).reshape(-1, 1), np.asarray(y, int))
    return float(model.coef_[0, 0]), float(model.intercept_[0])


@dataclass(frozen=True)
class Scaling:
    """Per-observation scaling p -> sigmoid(slope * logit(p) + intercept), fitted on one named set.

    ``apply`` refuses a run that shares any image with the fitting set: a scaling is never scored on
    the set it was fitted on. With a positive slope the map is increasing, so scaling a study's max
    score equals taking the max of its scaled images (study and image level stay consistent).
    """

    method: str
    fitted_on: str
    fitted_paths: frozenset
    parameters: pd.DataFrame  # index observation; slope, intercept, temperature, n, positives, note

    def transform(self, scores: pd.DataFrame) -> pd.DataFrame:
        """Scaled copies of the observation columns (by name) of a score table."""
        out = scores.copy()
        for obs, row in self.parameters.iterrows():
            out[obs] = _sigmoid(row["slope"] * to_logits(scores[obs]) + row["intercept"])
        return out

    def apply(self, run: RunScores, name: str) -> RunScores:
        """``run`` with scaled image and study scores; a DataError if it shares images with the fitting set."""
        check_disjoint(self.fitted_paths, self.fitted_on, run, name)
        return replace(
            run,
            name=f"{run.name} ({self.method} from {self.fitted_on})",
            image_scores=self.transform(run.image_scores),
            study_scores=self.transform(run.study_scores),
        )


def check_disjoint(fitted_paths, fitted_on: str, run: RunScores, name: str) -> None:
    """A DataError when ``run`` (set ``name``) holds any image of the set something was fitted or chosen on."""
    shared = run.image_labels.index.intersection(pd.Index(sorted(fitted_paths)))
    if len(shared):
        raise DataError(
            f"{name}: {len(shared)} of its {len(run.image_labels)} images (first {shared[0]!r}) are in "
            f"{fitted_on!r}, the set this was fitted or chosen on; expected a different set of images"
        )


def fit_scaling(run: RunScores, name: str, method: str = "temperature", observations=OBSERVATIONS) -> Scaling:
    """Fit temperature (or Platt) scaling per observation on ``run``'s study-level certain labels.

    An observation with one class present is left unscaled (slope 1, intercept 0) with a note.
    """
    if method not in METHODS:
        raise ValueError(f"unknown scaling method {method!r}; known: {', '.join(METHODS)}")
    rows = {}
    for obs in observations:
        y, p = certain_scores(run.study_labels[obs], run.study_scores.loc[run.study_labels.index, obs])
        row = {
            "slope": 1.0,
            "intercept": 0.0,
            "temperature": math.nan,
            "n": len(y),
            "positives": int(y.sum()),
            "note": "",
        }
        if not 0 < y.sum() < len(y):
            row["note"] = f"left unscaled: only one class present ({int(y.sum())} positive of {len(y)})"
        elif method == "temperature":
            row["temperature"] = fit_temperature(to_logits(p), y)
            row["slope"] = 1.0 / row["temperature"]
            if math.log(row["temperature"]) > 4.99:
                row["note"] = "temperature at the upper search bound (e^5): the scores carry no usable signal here"
            elif math.log(row["temperature"]) < -4.99:
                row["note"] = (
                    "temperature at the lower search bound (e^-5): the scores separate this set, T is not identified"
                )
        else:
            row["slope"], row["intercept"] = fit_platt(to_logits(p), y)
        rows[obs] = row
    parameters = pd.DataFrame.from_dict(rows, orient="index")
    parameters.index.name = "observation"
    return Scaling(method, name, frozenset(run.image_labels.index), parameters)


# ----------------------------------------------------------------------------------------------
# One run: tables, figure and files


def reliability_grid(sets: dict, path=None, title: str = "", observations=OBSERVATIONS):
    """4x4 reliability diagrams (scikit-learn's CalibrationDisplay, uniform bins), one panel per observation;
    ``sets`` maps a legend name to (labels, scores) tables; the legend, under each panel (outside its
    curves), gives each curve's ECE and n."""
    fig, axes = plt.subplots(4, 4, figsize=(13, 15))
    for ax, obs in zip(axes.ravel(), observations):
        ax.plot([0, 1], [0, 1], ls=":", c="grey", lw=0.8)
        for name, (labels, scores) in sets.items():
            y, p = certain_scores(labels[obs], scores.loc[labels.index, obs])
            if len(y) == 0:
                continue
            label = f"{name}: ECE {expected_calibration_error(y, p):.2f}, n {len(y)}"
            CalibrationDisplay.from_predictions(
                y, p, n_bins=N_BINS, strategy="uniform", ax=ax, name=label, ref_line=False, marker="."
            )
        ax.set(xlim=(0, 1), ylim=(0, 1.02), title=obs, xlabel="", ylabel="")
        ax.title.set_fontsize(9)
        ax.tick_params(labelsize=7)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6.5, loc="upper center", bbox_to_anchor=(0.5, -0.1), frameon=False)
    for ax in axes.ravel()[len(observations) :]:
        ax.axis("off")
    fig.supxlabel("mean predicted probability (per bin)")
    fig.supylabel("fraction of positives (per bin)")
    fig.suptitle(title)
    fig.subplots_adjust(
        left=0.06, right=0.98, bottom=0.07, top=0.92, wspace=0.2, hspace=0.62
    )  # tight_layout: 1-2 s more
    save_figure(fig, path)
    return fig


# Where a set's labels come from (the set names notebook 04 passes): a scaling or threshold fitted on
# one source and scored on another measures the model and the change of labels together.
LABEL_SOURCES = {
    "official valid": "radiologist labels (on the phantom: the truth)",
    "held-out": "report labels (blank = negative, uncertain left out)",
}


def labels_note(fit_name: str, score_name: str) -> str:
    """What a table fitted on ``fit_name`` and scored on ``score_name`` must say when their labels differ ('' else)."""
    fit, score = LABEL_SOURCES.get(fit_name), LABEL_SOURCES.get(score_name)
    if fit is None or score is None or fit == score:
        return ""
    return f"fitted on {fit_name} {fit}, scored on {score_name} against {score}"


def _set_label(name: str) -> str:
    return f"{name} [{LABEL_SOURCES[name]}]" if name in LABEL_SOURCES else name


def _rows(table: pd.DataFrame, set_name: str, scaling: str, scaler: Scaling | None = None) -> pd.DataFrame:
    table = table.reset_index()
    table.insert(0, "scaling", scaling)
    table.insert(0, "set", set_name)
    if scaler is not None:
        params = scaler.parameters.loc[table["observation"]]
        for column in ("temperature", "slope", "intercept"):
            table[column] = params[column].to_numpy()
        table["note"] = params["note"].to_numpy()
    return table.reindex(columns=list(CALIBRATION_COLUMNS))


def calibrate_run(
    run_dir,
    fit: RunScores,
    fit_name: str = "official valid",
    score: RunScores | None = None,
    score_name: str = "held-out",
    method: str = "temperature",
):
    """ECE and Brier on ``fit`` and (if given) on ``score`` before and after scaling fitted on ``fit``.

    Writes ``calibration.csv`` (one row per set x scaling x observation) and ``reliability.png`` into
    ``run_dir``; returns (the wide table (observation x measure) the notebook shows, the figure).
    """
    run_dir = Path(run_dir)
    parts = [_rows(calibration_table(fit.study_labels, fit.study_scores), fit_name, "none")]
    sets = {f"{fit_name}": (fit.study_labels, fit.study_scores)}
    if score is not None:
        scaler = fit_scaling(fit, fit_name, method)
        scaled = scaler.apply(score, score_name)
        parts.append(_rows(calibration_table(score.study_labels, score.study_scores), score_name, "none"))
        parts.append(
            _rows(
                calibration_table(scaled.study_labels, scaled.study_scores),
                score_name,
                f"{method} fitted on {fit_name}",
                scaler,
            )
        )
        sets[score_name] = (score.study_labels, score.study_scores)
        sets[f"{score_name}, scaled"] = (scaled.study_labels, scaled.study_scores)
    long = pd.concat(parts, ignore_index=True)
    write_table(long, RunDir(run_dir).calibration, index=False, float_format="%.6g")
    scaled_text = f"; 'scaled': {method} scaling fitted on {fit_name}" if score is not None else ""
    note = labels_note(fit_name, score_name) if score is not None else ""
    scaled_text += f"\n{note}" if note else ""
    fig = reliability_grid(
        sets,
        RunDir(run_dir).figure("reliability"),
        f"{fit.name}: reliability, study level{scaled_text}\nECE over {BINNING}",
    )
    return wide_table(long), fig


def wide_table(long: pd.DataFrame) -> pd.DataFrame:
    """observation x (set [its labels] | scaling | measure) from the long calibration table, observations in the
    usual order; a set named in LABEL_SOURCES says where its labels come from."""
    long = long.assign(column=long["set"].map(_set_label) + " | " + long["scaling"])
    wide = long.pivot(index="observation", columns="column", values=["ece", "brier"])
    wide.columns = [f"{column} | {measure}" for measure, column in wide.columns]
    columns = [f"{c} | {m}" for c in long["column"].unique() for m in ("ece", "brier")]  # in the long table's order
    temperature = long.dropna(subset=["temperature"]).set_index("observation")["temperature"]
    if len(temperature):
        wide["temperature"] = temperature
        columns.append("temperature")
    return wide.loc[[o for o in OBSERVATIONS if o in wide.index], columns]


def sweep_calibration(
    runs: pd.DataFrame, path=None, tasks=COMPETITION_TASKS, set_name: str = "official valid"
) -> pd.DataFrame:
    """Per run (rows of ``compare.run_table``): mean AUROC, ECE and Brier over ``tasks`` on ``set_name``
    (unscaled), from each run's official-valid metrics and calibration.csv, with its policy; AUROC and calibration
    side by side. Written to ``path`` (CSV) when given."""
    rows = {}
    for name, row in runs.iterrows():
        run = RunDir(row["path"])
        if not run.calibration.is_file():
            raise DataError(f"{run.calibration}: file does not exist; expected notebook 04 to have run")
        cal = pd.read_csv(run.calibration)
        cal = cal[(cal["set"] == set_name) & (cal["scaling"] == "none")].set_index("observation")
        metrics = json.loads(run.metrics(OFFICIAL_VALID).read_text())
        auroc = [metrics["observations"][t]["auroc"] for t in tasks]
        rows[name] = {
            "policy": row["policy"],
            "mean AUROC (5 tasks)": float(np.mean([math.nan if a is None else a for a in auroc])),
            "mean ECE (5 tasks)": float(cal.loc[list(tasks), "ece"].mean()),
            "mean Brier (5 tasks)": float(cal.loc[list(tasks), "brier"].mean()),
        }
        for task in tasks:
            rows[name][f"ECE {task}"] = float(cal.loc[task, "ece"])
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "run"
    if path is not None:
        write_table(table, path, float_format="%.6g")
    return table
