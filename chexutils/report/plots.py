"""Every figure of the workbook, one home: exploration, split, learning curves, evaluation and comparison.

Each function draws one figure, returns it, and saves it as PNG when given a path (``save``).
"""

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

from chexutils.core.io import save_figure
from chexutils.core.labels import OBSERVATIONS
from chexutils.data.chexpert import read_image
from chexutils.scoring.metrics import certain_scores, metric_text


def label_rates(rates: pd.DataFrame, path=None):
    """Stacked bars of positive / negative / uncertain / blank share per observation."""
    kinds = ["positive", "negative", "uncertain", "blank"]
    colors = ["#c0392b", "#2e86c1", "#f1c40f", "#d5d8dc"]
    fig, ax = plt.subplots(figsize=(8, 5))
    rates[kinds].iloc[::-1].plot.barh(stacked=True, color=colors, ax=ax, width=0.8)
    ax.set_xlabel("share of images")
    ax.set_xlim(0, 1)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("Label values per observation")
    save_figure(fig, path)
    return fig


def rates_vs_real(table: pd.DataFrame, kind: str = "uncertain", path=None):
    """This data set's rate of one label kind beside the real train.csv's."""
    fig, ax = plt.subplots(figsize=(7, 5))
    table[kind].iloc[::-1].plot.barh(ax=ax, color=["#5dade2", "#34495e"], width=0.8)
    ax.set_xlabel(f"share of images labelled {kind}")
    ax.set_title(f"{kind.capitalize()} rate: this data vs real train.csv")
    save_figure(fig, path)
    return fig


def distributions(frame: pd.DataFrame, path=None):
    """Studies per patient, images per study, age by sex, and view kinds, in one 2x2 figure."""
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    per_patient = frame.groupby("patient")["study"].nunique()
    sns.histplot(per_patient, discrete=True, ax=axes[0, 0]).set(
        xlabel="studies per patient", title="Studies per patient"
    )
    sns.countplot(x=frame.groupby("study").size(), ax=axes[0, 1]).set(
        xlabel="images per study", title="Images per study"
    )
    first = frame.drop_duplicates("patient")
    sns.histplot(data=first, x="Age", hue="Sex", bins=20, ax=axes[1, 0]).set(title="Age by sex (patients)")
    views = frame["Frontal/Lateral"] + " " + frame["AP/PA"].fillna("")
    sns.countplot(y=views, ax=axes[1, 1]).set(ylabel="", title="Views")
    fig.tight_layout()
    save_figure(fig, path)
    return fig


def cooccurrence(matrix: pd.DataFrame, path=None):
    """Heat map of P(column positive | row positive)."""
    fig, ax = plt.subplots(figsize=(9, 7.5))
    sns.heatmap(matrix, vmin=0, vmax=1, cmap="rocket_r", annot=True, fmt=".2f", annot_kws={"size": 6}, ax=ax)
    ax.set_title("P(column positive | row positive), studies")
    save_figure(fig, path)
    return fig


def image_grid(samples: pd.DataFrame, path=None, per_row: int = 3):
    """Sample images per finding: one row per finding, ``per_row`` images each."""
    findings = list(dict.fromkeys(samples["finding"]))
    fig, axes = plt.subplots(len(findings), per_row, figsize=(per_row * 1.6, len(findings) * 1.4), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for r, finding in enumerate(findings):
        rows = samples[samples["finding"] == finding].head(per_row)
        for c, image in enumerate(rows["image"]):
            axes[r, c].imshow(read_image(image), cmap="gray", vmin=0, vmax=255)
        axes[r, 0].text(-0.05, 0.5, finding, transform=axes[r, 0].transAxes, ha="right", va="center", fontsize=7)
    fig.subplots_adjust(left=0.3, wspace=0.05, hspace=0.08)
    save_figure(fig, path)
    return fig


def split_prevalence(summary: pd.DataFrame, observations, path=None):
    """Positive rate per observation in each split, side by side."""
    long = (
        summary[list(observations)]
        .T.rename_axis("observation")
        .reset_index()
        .melt(id_vars="observation", var_name="split", value_name="positive rate")
    )
    fig, ax = plt.subplots(figsize=(8, 5))
    sns.barplot(data=long, y="observation", x="positive rate", hue="split", ax=ax)
    ax.set_title("Positive rate per split (patient-level split)")
    save_figure(fig, path)
    return fig


def learning_curves(history: pd.DataFrame, path=None):
    """Train and valid loss, and valid mean AUROC over the competition tasks, per epoch."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    losses = history.melt(id_vars="epoch", value_vars=["train_loss", "valid_loss"], var_name="split", value_name="loss")
    sns.lineplot(data=losses, x="epoch", y="loss", hue="split", marker="o", ax=left).set(title="Loss")
    sns.lineplot(data=history, x="epoch", y="valid_auroc_tasks", marker="o", ax=right).set(
        title="Valid mean AUROC, 5 competition tasks (study level)", ylabel="AUROC"
    )
    for ax in (left, right):
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.tight_layout()
    save_figure(fig, path)
    return fig


# ---- evaluation and comparison ------------------------------------------------------------


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
            legend = (
                f"{name} {'AUC' if kind == 'roc' else 'AP'} {metric_text(value, None, None, y.sum(), len(y) - y.sum())}"
            )
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
    for ax in axes.ravel()[len(OBSERVATIONS) :]:
        ax.axis("off")
    fig.supxlabel("false positive rate" if kind == "roc" else "recall")
    fig.supylabel("true positive rate" if kind == "roc" else "precision")
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)
    return fig


def comparison_heatmap(table: pd.DataFrame, path=None, title: str = "AUROC"):
    """Rows (runs or published models) x observations, annotated; NaN cells left blank.

    The colour scale runs to 1 from 0.5 (chance) or lower, down to the lowest value shown (to the
    tenth below it), so a below-chance AUROC gets its own colour instead of sharing chance's."""
    values = table.astype(float)
    lowest = np.nanmin(values.to_numpy()) if values.notna().any().any() else 0.5
    fig, ax = plt.subplots(figsize=(max(8, 0.7 * table.shape[1] + 3), 0.45 * table.shape[0] + 2.5))
    sns.heatmap(
        values,
        vmin=min(0.5, np.floor(lowest * 10) / 10),
        vmax=1.0,
        cmap="viridis",
        annot=True,
        fmt=".2f",
        annot_kws={"size": 7},
        ax=ax,
        cbar_kws={"label": title},
    )
    ax.set(xlabel="", ylabel="", title=title)
    fig.tight_layout()
    save_figure(fig, path)
    return fig


def share_heatmap(
    shares: pd.DataFrame,
    texts: pd.DataFrame,
    path=None,
    title: str = "",
    xlabel: str = "",
    label: str = "share truly positive",
):
    """Rows x columns of shares in [0, 1] (e.g. truly positive per report label), each cell annotated with
    its share and ``texts`` (e.g. 'k/n'); empty cells (NaN) left blank."""
    values = shares.astype(float)
    annot = values.map(lambda v: "" if pd.isna(v) else f"{v:.2f}") + "\n" + texts.reindex_like(values).fillna("")
    width = max(6.0, 0.75 * values.shape[1] + 3.5)
    fig, ax = plt.subplots(figsize=(width, 0.42 * values.shape[0] + 1.8))
    sns.heatmap(
        values,
        vmin=0,
        vmax=1,
        cmap="rocket_r",
        annot=annot.to_numpy(),
        fmt="",
        annot_kws={"size": 6.5},
        ax=ax,
        cbar_kws={"label": label},
    )
    ax.set(xlabel=xlabel, ylabel="", title=title)
    ax.tick_params(labelsize=7)
    fig.tight_layout()
    save_figure(fig, path)
    return fig


def cross_site_heatmap(grid: pd.DataFrame, path=None, title: str = "mean AUROC: trained on (rows) x evaluated on"):
    """The trained-on x evaluated-on grid (evaluation/external.grid), annotated; chance (0.5) at the bottom of the scale."""
    fig, ax = plt.subplots(figsize=(1.6 * grid.shape[1] + 3, 0.6 * grid.shape[0] + 1.8))
    sns.heatmap(grid.astype(float), vmin=0.5, vmax=1.0, cmap="viridis", annot=True, fmt=".3f", ax=ax,
                cbar_kws={"label": "AUROC"})  # fmt: skip
    ax.set(xlabel="evaluated on", ylabel="trained on", title=title)
    fig.tight_layout()
    save_figure(fig, path)
    return fig


def forest_plot(table: pd.DataFrame, value: str = "auroc", path=None, title: str = "AUROC by group"):
    """One row per (observation, group) of evaluation/subgroups.subgroup_table: the point, its interval (none
    below the floor: the point alone, hollow) and the counts as text."""
    rows = table.reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(8, 0.32 * len(rows) + 1.5))
    ypos = np.arange(len(rows))[::-1]
    has_ci = rows["ci_low"].notna().to_numpy()
    ax.errorbar(rows.loc[has_ci, value], ypos[has_ci],
                xerr=[rows.loc[has_ci, value] - rows.loc[has_ci, "ci_low"], rows.loc[has_ci, "ci_high"] - rows.loc[has_ci, value]],
                fmt="o", color="C0", capsize=2)  # fmt: skip
    ax.plot(rows.loc[~has_ci, value], ypos[~has_ci], "o", mfc="none", color="C1", label="no CI (below the floor)")
    ax.set_yticks(ypos, [f"{o} · {g}" for o, g in zip(rows["observation"], rows["group"], strict=True)], fontsize=7)
    for y, text in zip(ypos, rows.get("text", [""] * len(rows)), strict=True):
        ax.annotate(str(text), (1.0, y), xycoords=("axes fraction", "data"), xytext=(4, 0), textcoords="offset points",
                    fontsize=6, va="center")  # fmt: skip
    ax.axvline(0.5, color="grey", lw=0.8, ls=":")
    ax.set(xlabel=value, title=title)
    if (~has_ci).any():
        ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    save_figure(fig, path)
    return fig
