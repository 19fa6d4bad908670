"""Interactive ROC browser for notebooks: overlay runs' ROC curves and read off an operating point.

The numbers (operating points, ROC points, loading a run's scores) are plain functions, so they are
testable without a browser; `RocBrowser` only wires ipywidgets to them and draws the result.
"""

import base64
import io

import ipywidgets as W
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score, roc_curve

from .evaluate import LEVELS, RunScores, load_run_scores  # noqa: F401  (load_run_scores: the browser's input)
from .labels import OBSERVATIONS
from .metrics import certain_scores, metric_text, one_class_note

STATE_COLUMNS = ("n", "positives", "negatives", "auroc", "threshold", "sensitivity", "specificity", "ppv", "npv",
                 "tp", "fp", "tn", "fn", "note")


def _ratio(num: int, den: int) -> float:
    """num / den, NaN when the denominator is 0 (a rate that is undefined, not zero)."""
    return num / den if den else float("nan")


def operating_point(y: np.ndarray, scores: np.ndarray, threshold: float) -> dict:
    """Confusion counts and rates when score >= threshold is called positive (NaN where undefined)."""
    y = np.asarray(y).astype(int)
    predicted = np.asarray(scores, float) >= threshold
    tp = int(np.sum(predicted & (y == 1)))
    fp = int(np.sum(predicted & (y == 0)))
    tn = int(np.sum(~predicted & (y == 0)))
    fn = int(np.sum(~predicted & (y == 1)))
    return {"threshold": float(threshold), "tp": tp, "fp": fp, "tn": tn, "fn": fn,
            "sensitivity": _ratio(tp, tp + fn), "specificity": _ratio(tn, tn + fp),
            "ppv": _ratio(tp, tp + fp), "npv": _ratio(tn, tn + fn)}


def roc_points(y: np.ndarray, scores: np.ndarray) -> pd.DataFrame:
    """ROC curve points (fpr, tpr, thresholds) from sklearn, with the AUROC repeated in column auroc.

    With only one class present there is no curve: the frame is empty and ``attrs['auroc']`` is NaN.
    """
    y, scores = np.asarray(y).astype(int), np.asarray(scores, float)
    if one_class_note(y):
        points = pd.DataFrame({c: pd.Series(dtype=float) for c in ("fpr", "tpr", "thresholds", "auroc")})
        points.attrs["auroc"] = float("nan")
        return points
    fpr, tpr, thresholds = roc_curve(y, scores)
    auroc = float(roc_auc_score(y, scores))
    points = pd.DataFrame({"fpr": fpr, "tpr": tpr, "thresholds": thresholds, "auroc": auroc})
    points.attrs["auroc"] = auroc
    return points


def run_state(run: RunScores, observation: str, level: str, threshold: float) -> dict:
    """One row of the browser's table: counts, AUROC and the operating point of one run."""
    labels, scores = run.level(level)
    y, s = certain_scores(labels[observation], scores[observation])
    note = one_class_note(y)
    auroc = float("nan") if note else float(roc_auc_score(y, s))
    return {"n": len(y), "positives": int(y.sum()), "negatives": int(len(y) - y.sum()), "auroc": auroc,
            **operating_point(y, s, threshold), "note": note}


def state_html(state: pd.DataFrame) -> str:
    """The operating-point table as HTML, rates to 3 decimals, counts as integers."""
    if state.empty:
        return "<p>Select at least one run.</p>"
    return state.to_html(float_format=lambda v: f"{v:.3f}", na_rep="NaN", index_names=False)


def plot_rocs(curves: dict, state: pd.DataFrame, title: str):
    """A figure with one ROC curve per run, its AUC in the legend and its operating point marked."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.plot([0, 1], [0, 1], color="0.75", linestyle="--", linewidth=1)
    for name, points in curves.items():
        row = state.loc[name]
        if row["note"]:
            ax.plot([], [], label=f"{name} (AUC n/a: {row['note']})")
            continue
        legend = metric_text(row["auroc"], None, None, row["positives"], row["negatives"])
        line, = ax.plot(points["fpr"], points["tpr"], label=f"{name} (AUC {legend})")
        ax.plot(1 - row["specificity"], row["sensitivity"], "o", color=line.get_color(), markersize=8, clip_on=False)
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="1 - specificity (FPR)", ylabel="sensitivity (TPR)", title=title)
    if curves:
        ax.legend(loc="lower right", fontsize=8)
    return fig


def figure_png(fig) -> str:
    """The figure as base64 PNG text (what a notebook's display_data carries), closing it afterwards."""
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    finally:
        plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


class RocBrowser:
    """Widgets to pick runs, an observation, image/study level and a threshold; shows ROC plot + table."""

    def __init__(self, runs: list[RunScores]):
        names = [run.name for run in runs]
        if not runs or len(set(names)) != len(names):
            raise ValueError(f"expected at least one run, with distinct names; got {names}")
        self.runs = {run.name: run for run in runs}
        self.runs_select = W.SelectMultiple(options=names, value=tuple(names), description="runs",
                                            rows=min(len(names), 6))
        self.observation_select = W.Dropdown(options=list(OBSERVATIONS), value=OBSERVATIONS[0],
                                             description="observation")
        self.level_toggle = W.ToggleButtons(options=list(LEVELS), value="image", description="level")
        self.threshold_slider = W.FloatSlider(value=0.5, min=0.0, max=1.0, step=0.01, description="threshold",
                                              continuous_update=False)
        self.output = W.Output()
        self.table = W.HTML()
        controls = W.VBox([self.runs_select, self.observation_select, self.level_toggle, self.threshold_slider])
        self.box = W.VBox([controls, W.HBox([self.output, self.table])])
        for widget in (self.runs_select, self.observation_select, self.level_toggle, self.threshold_slider):
            widget.observe(self.refresh, names="value")
        self.refresh()

    def selected(self) -> list[RunScores]:
        """The selected runs, in the order they were given."""
        return [run for name, run in self.runs.items() if name in self.runs_select.value]

    def state(self) -> pd.DataFrame:
        """The operating-point table (one row per selected run) for the current widget values."""
        obs, level, threshold = self.observation_select.value, self.level_toggle.value, self.threshold_slider.value
        rows = {run.name: run_state(run, obs, level, threshold) for run in self.selected()}
        return pd.DataFrame.from_dict(rows, orient="index", columns=list(STATE_COLUMNS))

    def refresh(self, change=None) -> None:
        """Recompute the table and redraw the plot (called whenever a widget value changes)."""
        state = self.state()
        self.table.value = state_html(state)
        curves = {}
        for run in self.selected():
            labels, scores = run.level(self.level_toggle.value)
            curves[run.name] = roc_points(*certain_scores(labels[self.observation_select.value],
                                                          scores[self.observation_select.value]))
        title = (f"{self.observation_select.value}: {self.level_toggle.value} level, "
                 f"threshold {self.threshold_slider.value:.2f}")
        png = figure_png(plot_rocs(curves, state, title))
        # Set the outputs directly (rather than `with output: display(...)`), so it works with or without a kernel.
        self.output.outputs = ({"output_type": "display_data", "metadata": {},
                                "data": {"image/png": png, "text/plain": f"<ROC plot: {title}>"}},)

    def display(self) -> W.VBox:
        """The whole browser as one VBox (the last expression of a cell shows it)."""
        return self.box

    def _ipython_display_(self):
        """Show the browser when the RocBrowser itself is the cell's value."""
        from IPython.display import display
        display(self.box)
