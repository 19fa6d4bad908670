"""Interactive ROC browser for notebooks: overlay runs' ROC curves (one run or a whole sweep), read off an
operating point, see the runs' calibration beside it and the images it gets right and wrong.

The numbers (operating points, ROC points, gallery cases, loading a run's scores) are plain functions,
so they are testable without a browser; `RocBrowser` only wires ipywidgets to them and draws the result.
"""

import base64
import io
from pathlib import Path

import ipywidgets as W
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score, roc_curve

from chexutils.core.labels import OBSERVATIONS
from chexutils.core.rundir import OFFICIAL_VALID
from chexutils.evaluation.calibration import N_BINS, bin_table, brier_score, expected_calibration_error
from chexutils.evaluation.evaluate import (  # noqa: F401  (load_run_scores: the browser's input)
    LEVELS,
    RunScores,
    load_run_scores,
)
from chexutils.evaluation.operating_points import (  # noqa: F401  (re-exported)
    choose_threshold,
    describe_rule,
    operating_point,
)
from chexutils.explain.gallery import KINDS, gallery_cases, gallery_figure, load_images
from chexutils.scoring.metrics import certain_scores, metric_text, one_class_note

STATE_COLUMNS = (
    "n",
    "positives",
    "negatives",
    "auroc",
    "ece",
    "brier",
    "threshold",
    "sensitivity",
    "specificity",
    "ppv",
    "npv",
    "tp",
    "fp",
    "tn",
    "fn",
    "note",
)


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
    """One row of the browser's table: counts, AUROC, ECE, Brier and the operating point of one run."""
    labels, scores = run.level(level)
    y, s = certain_scores(labels[observation], scores[observation])
    note = one_class_note(y)
    auroc = float("nan") if note else float(roc_auc_score(y, s))
    return {
        "n": len(y),
        "positives": int(y.sum()),
        "negatives": int(len(y) - y.sum()),
        "auroc": auroc,
        "ece": expected_calibration_error(y, s),
        "brier": brier_score(y, s),
        **operating_point(y, s, threshold),
        "note": note,
    }


def state_html(state: pd.DataFrame) -> str:
    """The operating-point table as HTML, rates to 3 decimals, counts as integers."""
    if state.empty:
        return "<p>Select at least one run.</p>"
    return state.to_html(float_format=lambda v: f"{v:.3f}", na_rep="NaN", index_names=False)


def plot_rocs(curves: dict, state: pd.DataFrame, title: str, calibration: dict | None = None):
    """ROC curves (one per run, AUC in the legend, operating point marked) and, when ``calibration``
    maps run names to ``calibration.bin_table`` frames, the reliability curves beside them."""
    fig, axes = plt.subplots(
        1, 2 if calibration is not None else 1, figsize=(13, 6) if calibration is not None else (7, 6), squeeze=False
    )
    ax = axes[0, 0]
    ax.plot([0, 1], [0, 1], color="0.75", linestyle="--", linewidth=1)
    colors = {}
    for name, points in curves.items():
        row = state.loc[name]
        if row["note"]:
            (line,) = ax.plot([], [], label=f"{name} (AUC n/a: {row['note']})")
            colors[name] = line.get_color()
            continue
        legend = metric_text(row["auroc"], None, None, row["positives"], row["negatives"])
        (line,) = ax.plot(points["fpr"], points["tpr"], linewidth=2, label=f"{name} (AUC {legend})")
        colors[name] = line.get_color()
        ax.plot(1 - row["specificity"], row["sensitivity"], "o", color=line.get_color(), markersize=9, clip_on=False)
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="1 - specificity (FPR)", ylabel="sensitivity (TPR)", title=title)
    if curves:
        _legend_below(ax)
    if calibration is not None:
        ax = axes[0, 1]
        ax.plot([0, 1], [0, 1], color="0.75", linestyle="--", linewidth=1)
        for name, bins in calibration.items():
            filled = bins[bins["count"] > 0]
            ax.plot(
                filled["mean_predicted"],
                filled["fraction_positive"],
                "o-",
                color=colors.get(name),
                label=f"{name} (ECE {state.loc[name, 'ece']:.3f})",
            )
        if len(state):
            ax.axvline(state["threshold"].iloc[0], color="0.4", linestyle=":", linewidth=1.5, label="threshold")
        ax.set(
            xlim=(0, 1),
            ylim=(0, 1.01),
            xlabel=f"mean predicted probability ({N_BINS} equal-width bins)",
            ylabel="fraction positive",
            title="calibration (reliability)",
        )
        if calibration:
            _legend_below(ax)
    fig.tight_layout()
    return fig


def _legend_below(ax) -> None:
    """The legend under the axes (outside the curves, which a legend inside would cover)."""
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.11), fontsize=10, frameon=False)


def figure_png(fig) -> str:
    """The figure as base64 PNG text (what a notebook's display_data carries), closing it afterwards."""
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    finally:
        plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _png_output(png: str, text: str) -> tuple:
    """An Output widget's outputs holding one PNG (set directly, so it works with or without a kernel)."""
    return ({"output_type": "display_data", "metadata": {}, "data": {"image/png": png, "text/plain": text}},)


class RocBrowser:
    """Widgets to pick runs, an observation, image/study level and a threshold; shows the ROC and
    reliability plot, the operating-point table and a gallery of the first selected run's images.

    The threshold starts at (and resets to, whenever the observation or level changes) the one chosen
    by ``rule`` (default Youden's J) on the shown set for the first selected run; the caption says so,
    and says the typed value instead once the threshold is moved by hand.
    ``image_root`` is the folder holding ``CheXpert-v1.0-small/`` (no gallery without it);
    ``overlay(paths, observation) -> list of HxWx3 uint8 arrays`` draws the gallery images (default grayscale).
    """

    def __init__(
        self,
        runs: list[RunScores],
        image_root=None,
        overlay=None,
        rule: str = "youden",
        gallery_size: int = 4,
        set_name: str = "the shown set",
    ):
        names = [run.name for run in runs]
        if not runs or len(set(names)) != len(names):
            raise ValueError(f"expected at least one run, with distinct names; got {names}")
        describe_rule(rule)  # an unknown rule fails here, not at the first refresh
        self.runs = {run.name: run for run in runs}
        self.image_root, self.overlay, self.rule = image_root, overlay, rule
        self.gallery_size, self.set_name = gallery_size, set_name
        self._holding = False
        self._rule = (float("nan"), float("nan"), "")  # (slider value at the last reset, the rule's threshold, caption)
        self.runs_select = W.SelectMultiple(
            options=names,
            value=tuple(names),
            description="runs",
            rows=min(len(names), 8),
            layout=W.Layout(width="420px"),
        )
        self.observation_select = W.Dropdown(
            options=list(OBSERVATIONS), value=OBSERVATIONS[0], description="observation"
        )
        self.level_toggle = W.ToggleButtons(options=list(LEVELS), value="study", description="level")
        self.threshold_slider = W.FloatSlider(
            value=0.5,
            min=0.0,
            max=1.0,
            step=0.001,
            description="threshold",
            readout_format=".3f",
            continuous_update=False,
            layout=W.Layout(width="420px"),
        )
        self.rule_button = W.Button(description=f"reset to {rule}")
        self.caption = W.HTML()
        self.output = W.Output(layout=W.Layout(min_width="1000px"))
        self.table = W.HTML()
        self.gallery = W.Output()
        controls = W.VBox(
            [
                self.runs_select,
                self.observation_select,
                self.level_toggle,
                W.HBox([self.threshold_slider, self.rule_button]),
            ]
        )
        self.box = W.VBox([controls, self.caption, self.output, self.table, self.gallery])
        self.runs_select.observe(self.refresh, names="value")
        self.threshold_slider.observe(self.refresh, names="value")
        for widget in (self.observation_select, self.level_toggle):
            widget.observe(self.reset_threshold, names="value")
        self.rule_button.on_click(self.reset_threshold)
        self.reset_threshold()

    @classmethod
    def from_runs(cls, run_dirs, frame: pd.DataFrame, split: str = OFFICIAL_VALID, **options) -> "RocBrowser":
        """A browser over several run folders (e.g. all runs of a sweep), named by folder, on one split."""
        return cls([load_run_scores(d, frame, split) for d in run_dirs], **options)

    def selected(self) -> list[RunScores]:
        """The selected runs, in the order they were given."""
        return [run for name, run in self.runs.items() if name in self.runs_select.value]

    def rule_threshold(self) -> tuple[float, str]:
        """(threshold by the rule for the first selected run at the current observation and level, caption)."""
        run = (self.selected() or list(self.runs.values()))[0]
        labels, scores = run.level(self.level_toggle.value)
        threshold, note = choose_threshold(
            *certain_scores(labels[self.observation_select.value], scores[self.observation_select.value]), self.rule
        )
        where = f"{run.name}, {self.observation_select.value}, {self.level_toggle.value} level, on {self.set_name}"
        if note:
            return threshold, f"Threshold not set by {self.rule} ({where}): {note}."
        return threshold, (
            f"Threshold set to {threshold:.3f} by {describe_rule(self.rule)}, chosen on {where} "
            "(so its rates here are optimistic; notebook 04 reports thresholds on another set)."
        )

    def reset_threshold(self, change=None) -> None:
        """Move the threshold to the rule's (when defined) and redraw once."""
        threshold, caption = self.rule_threshold()
        self._holding = True
        try:
            if np.isfinite(threshold):
                self.threshold_slider.value = float(np.clip(threshold, 0.0, 1.0))
        finally:
            self._holding = False
        self._rule = (self.threshold_slider.value, float(threshold), caption)
        self.refresh()

    def caption_text(self) -> str:
        """The rule's caption while the threshold is the rule's; once typed or dragged, the typed value."""
        at_reset, threshold, caption = self._rule
        value = self.threshold_slider.value
        if value == at_reset:
            return caption
        rule = f"{self.rule} gives {threshold:.3f}" if np.isfinite(threshold) else "no rule threshold here"
        return (
            f"Threshold {value:.3f}, set by hand (score >= {value:.3f} is positive; {rule} on {self.set_name}; "
            f"'reset to {self.rule}' goes back to it)."
        )

    def state(self) -> pd.DataFrame:
        """The operating-point table (one row per selected run) for the current widget values."""
        obs, level, threshold = self.observation_select.value, self.level_toggle.value, self.threshold_slider.value
        rows = {run.name: run_state(run, obs, level, threshold) for run in self.selected()}
        return pd.DataFrame.from_dict(rows, orient="index", columns=list(STATE_COLUMNS))

    def cases(self) -> pd.DataFrame:
        """The gallery's cases (``gallery.gallery_cases``) for the first selected run; empty if none selected."""
        selected = self.selected()
        if not selected:
            return pd.DataFrame(columns=["kind", "key", "score", "label", "path"])
        return gallery_cases(
            selected[0],
            self.observation_select.value,
            self.level_toggle.value,
            self.threshold_slider.value,
            self.gallery_size,
        )

    def figures(self) -> tuple:
        """(ROC + reliability figure, gallery figure or None) for the current widget values; the caller closes them."""
        obs, level = self.observation_select.value, self.level_toggle.value
        state = self.state()
        curves, calibration = {}, {}
        for run in self.selected():
            labels, scores = run.level(level)
            y, s = certain_scores(labels[obs], scores[obs])
            curves[run.name], calibration[run.name] = roc_points(y, s), bin_table(y, s)
        title = f"{obs}: {level} level, threshold {self.threshold_slider.value:.3f}"
        view = plot_rocs(curves, state, title, calibration)
        gallery = None
        cases = self.cases()
        if self.image_root is not None and len(cases):
            images = load_images([Path(self.image_root) / p for p in cases["path"]], obs, self.overlay)
            gallery = gallery_figure(
                cases,
                images,
                self.gallery_size,
                f"{self.selected()[0].name}: {obs}, {level} level, "
                f"threshold {self.threshold_slider.value:.3f} (score >= threshold is positive)",
            )
        return view, gallery

    def refresh(self, change=None) -> None:
        """Recompute the table and redraw the plot and gallery (called whenever a widget value changes)."""
        if self._holding:
            return
        view, gallery = self.figures()
        title = view.axes[0].get_title()
        self.output.outputs = _png_output(figure_png(view), f"<ROC and reliability plot: {title}>")
        if gallery is None:
            text = (
                "no image_root given: no gallery"
                if self.image_root is None
                else f"no {', '.join(KINDS)} at this threshold"
            )
            self.gallery.outputs = ({"output_type": "display_data", "metadata": {}, "data": {"text/plain": text}},)
        else:
            self.gallery.outputs = _png_output(figure_png(gallery), f"<gallery: {title}>")
        self.caption.value = self.caption_text()
        self.table.value = state_html(self.state())  # last: once the table shows a change, plot and gallery have it

    def display(self) -> W.VBox:
        """The whole browser as one VBox (the last expression of a cell shows it)."""
        return self.box

    def _ipython_display_(self):
        """Show the browser, then a static picture of the same view, so a saved notebook shows one too."""
        from IPython.display import Image, Markdown, display

        display(self.box)
        display(
            Markdown(
                f"*Static picture of the view as first shown (for readers without a running kernel).* "
                f"{self.caption.value}"
            )
        )
        for output in (self.output, self.gallery):
            for item in output.outputs:
                if "image/png" in item["data"]:
                    display(Image(data=base64.b64decode(item["data"]["image/png"])))
