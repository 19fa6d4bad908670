"""Image galleries at a threshold: a few true positives, false positives and false negatives of one run
and observation, optionally with a heatmap overlaid by a caller-supplied function.

Why: an operating point is easier to judge with the images it gets right and wrong in view. Which
cases are shown is a plain function (``gallery_cases``), so it is testable without a figure.
"""

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from chexutils.data.chexpert import read_image
from chexutils.evaluation.evaluate import RunScores
from chexutils.scoring.metrics import certain_scores

KINDS = ("true positive", "false positive", "false negative")
ORDER = {
    "true positive": "highest scores first",
    "false positive": "highest scores first (most confident errors)",
    "false negative": "lowest scores first (most confident misses)",
}


def study_of(path: str) -> str:
    """'patientNNNNN/studyN' of a CheXpert image Path (the ``study`` key of ``data.read_chexpert``)."""
    return "/".join(Path(path).parts[-3:-1])


def short_title(key: str) -> str:
    """A gallery title that fits one image's width: ``p00001 s1 view1_frontal`` for an image Path,
    ``p00001 s1`` for a study key (never the full path, whose neighbours' titles would run into it)."""
    parts = Path(key).parts
    words = []
    for part in parts:
        if part.startswith("patient") and part[7:].isdigit():
            words = [f"p{part[7:]}"]
        elif part.startswith("study") and part[5:].isdigit() and words:
            words.append(f"s{part[5:]}")
        elif len(words) == 2 and part == parts[-1]:
            words.append(Path(part).stem)
    return " ".join(words) if words else Path(key).name


def gallery_cases(run: RunScores, observation: str, level: str, threshold: float, k: int = 4) -> pd.DataFrame:
    """Up to ``k`` cases of each kind at ``threshold`` (score >= threshold is positive), certain labels only.

    Columns: kind, key (study or image Path), score, label, path (the image to show: at study level the
    study's highest-scoring image, the one that set its score under max aggregation). Ties by key.
    ``attrs['totals']`` counts every case of each kind at this threshold.
    """
    labels, scores = run.level(level)
    keys = labels.index[labels[observation].fillna(0.0).to_numpy() != -1.0]
    y, s = certain_scores(labels[observation], scores.loc[labels.index, observation])
    cases = pd.DataFrame({"key": keys, "score": s, "label": y})
    positive = cases["score"] >= threshold
    masks = {
        "true positive": positive & (cases["label"] == 1),
        "false positive": positive & (cases["label"] == 0),
        "false negative": ~positive & (cases["label"] == 1),
    }
    parts = []
    for kind in KINDS:
        part = cases[masks[kind]].sort_values(["score", "key"], ascending=[kind == "false negative", True])
        parts.append(part.head(k).assign(kind=kind))
    chosen = pd.concat(parts, ignore_index=True)
    chosen.attrs["totals"] = {kind: int(mask.sum()) for kind, mask in masks.items()}
    if level == "study":
        image_scores = run.image_scores[observation]
        studies = image_scores.index.map(study_of)
        best = image_scores.groupby(studies).idxmax()  # the Path with the study's max score
        chosen["path"] = best.reindex(chosen["key"]).to_numpy()
    else:
        chosen["path"] = chosen["key"]
    out = chosen[["kind", "key", "score", "label", "path"]]
    out.attrs["totals"] = chosen.attrs["totals"]
    return out


def grayscale_images(paths, observation=None) -> list[np.ndarray]:
    """The default gallery images: each file as an HxWx3 uint8 grayscale picture (no overlay)."""
    return [np.repeat(read_image(p)[:, :, None], 3, axis=2) for p in paths]


def load_images(paths, observation: str, overlay=None) -> list[np.ndarray]:
    """``overlay(paths, observation)`` (e.g. heatmaps over the images; ``paths``: absolute ``pathlib.Path``s)
    or plain grayscale; checked to be one HxWx3 uint8 array per path."""
    paths = [Path(p) for p in paths]
    images = (overlay or grayscale_images)(paths, observation)
    if len(images) != len(paths):
        raise ValueError(f"the overlay function returned {len(images)} images for {len(paths)} paths")
    for path, image in zip(paths, images):
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"{path}: the overlay function returned {image.dtype} {image.shape}; expected HxWx3 uint8")
    return [np.asarray(i) for i in images]


def gallery_figure(cases: pd.DataFrame, images: list, k: int, title: str = ""):
    """Rows: true positives, false positives, false negatives; up to ``k`` images each with a short title
    (patient, study, view: ``short_title``) and score."""
    fig, axes = plt.subplots(len(KINDS), k, figsize=(2.6 * k, 2.9 * len(KINDS)), squeeze=False)
    by_kind = {kind: [] for kind in KINDS}
    for (_, case), image in zip(cases.iterrows(), images):
        by_kind[case["kind"]].append((case, image))
    for row, kind in enumerate(KINDS):
        for col in range(k):
            ax = axes[row, col]
            ax.set_xticks([])
            ax.set_yticks([])
            if col < len(by_kind[kind]):
                case, image = by_kind[kind][col]
                ax.imshow(image)
                ax.set_title(f"{short_title(case['key'])}\nscore {case['score']:.3f}", fontsize=8)
            else:
                ax.text(0.5, 0.5, "none" if col == 0 else "", ha="center", va="center", fontsize=10)
                ax.axis("off")
        total = cases.attrs.get("totals", {}).get(kind, len(by_kind[kind]))
        axes[row, 0].set_ylabel(f"{kind}\n({len(by_kind[kind])} of {total} shown)", fontsize=10)
        if not by_kind[kind]:
            axes[row, 0].axis("on")
            axes[row, 0].set_frame_on(False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
