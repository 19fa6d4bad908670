"""Evaluation figures: ROC and PR grids over the 14 observations, and the comparison heat map."""

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

from .figures import save
from .labels import OBSERVATIONS
from .metrics import certain_scores, metric_text


def curve_grid(levels: dict, kind: str = "roc", path=None, title: str = ""):
    """A 4x4 grid, one panel per observation; ``levels`` maps a legend name to (labels, scores) tables.

    kind "roc" draws ROC curves with AUROC in the legend, "pr" precision-recall with AP, each with
    its positives and negatives (metrics.metric_text: 'few positives' below 10, 'n/a' below 3). An
    observation with one class present gets a note instead of a curve.
    """
    if kind not in ("roc", "pr"):
        raise ValueError(f"unknown curve kind {kind!r}; known: roc, pr")
    fig, axes = plt.subplots(4, 4, figsize=(13, 12.5))
    for ax, obs in zip(axes.ravel(), OBSERVATIONS):
        for name, (labels, scores) in levels.items():
            y, s = certain_scores(labels[obs], scores[obs])
            if len(np.unique(y)) < 2:
                ax.text(0.5, 0.5 - 0.1 * list(levels).index(name), f"{name}: one class only", ha="center", fontsize=7)
                continue
            value = roc_auc_score(y, s) if kind == "roc" else average_precision_score(y, s)
            legend = f"{name} {'AUC' if kind == 'roc' else 'AP'} {metric_text(value, None, None, y.sum(), len(y) - y.sum())}"
            if kind == "roc":
                x_axis, y_axis, _ = roc_curve(y, s)
                ax.plot(x_axis, y_axis, label=legend)
            else:
                precision, recall, _ = precision_recall_curve(y, s)
                ax.plot(recall, precision, label=legend)
        if kind == "roc":
            ax.plot([0, 1], [0, 1], ls=":", c="grey", lw=0.8)
        ax.set(xlim=(0, 1), ylim=(0, 1.02), title=obs)
        ax.title.set_fontsize(9)
        ax.tick_params(labelsize=7)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6.5, loc="lower right" if kind == "roc" else "lower left")
    for ax in axes.ravel()[len(OBSERVATIONS):]:
        ax.axis("off")
    fig.supxlabel("false positive rate" if kind == "roc" else "recall")
    fig.supylabel("true positive rate" if kind == "roc" else "precision")
    fig.suptitle(title)
    fig.tight_layout()
    save(fig, path)
    return fig


def comparison_heatmap(table: pd.DataFrame, path=None, title: str = "AUROC"):
    """Rows (runs or published models) x observations, annotated; NaN cells left blank."""
    fig, ax = plt.subplots(figsize=(max(8, 0.7 * table.shape[1] + 3), 0.45 * table.shape[0] + 2.5))
    sns.heatmap(table.astype(float), vmin=0.5, vmax=1.0, cmap="viridis", annot=True, fmt=".2f",
                annot_kws={"size": 7}, ax=ax, cbar_kws={"label": title})
    ax.set(xlabel="", ylabel="", title=title)
    fig.tight_layout()
    save(fig, path)
    return fig
