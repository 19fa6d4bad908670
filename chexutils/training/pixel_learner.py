"""A cheap but real learner on the pixels: per-observation logistic regression on downsampled images.

Used where a network would be too slow to train several times (the cross-site study's trained-on x
evaluated-on grid with seeds, and its tests on 2 CPU cores): each image is read, resized to
``size`` x ``size`` (bilinear) and scaled to [0, 1]; one L2-regularised logistic regression
(scikit-learn, lbfgs) per observation is fitted on a policy's targets (``training/policies``:
U-Zeros, U-Ones, ...; blanks negative), entries the policy masks out left out. It learns what the
pixels show, so a change of the image look moves its AUROC as it would a network's, only more so
(no augmentation, no invariance built in). It is not a substitute for ``training/train.py``'s
networks when the figure to report is a model's AUROC.

``seed`` with ``subsample`` < 1 fits on a random share of the training *patients* (the learner is
otherwise deterministic): the seed-to-seed spread then stands in for training noise.
"""

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from PIL import Image
from sklearn.linear_model import LogisticRegression

from chexutils.core.labels import OBSERVATIONS
from chexutils.scoring.aggregate import aggregate_studies
from chexutils.training.policies import get_policy

DEFAULT_SIZE = 32
DEFAULT_C = 0.05  # inverse L2 strength on standardised pixels: strong enough for a few hundred images
MIN_CLASS = 2  # a target with fewer positives or negatives than this is not fitted (NaN scores)


def pixel_features(frame: pd.DataFrame, size: int = DEFAULT_SIZE) -> np.ndarray:
    """(images x size*size) float32 in [0, 1]: each ``frame["image"]`` resized to size x size."""
    out = np.empty((len(frame), size * size), np.float32)
    for i, path in enumerate(frame["image"]):
        with Image.open(path) as img:
            small = img.convert("L").resize((size, size), Image.BILINEAR)
        out[i] = np.asarray(small, np.float32).ravel() / 255.0
    return out


@dataclass
class PixelLearner:
    """Fitted per-observation models on standardised pixels (mean / sd from the training images)."""

    policy: str
    mean: np.ndarray
    sd: np.ndarray
    models: dict = field(default_factory=dict)  # observation -> LogisticRegression (missing: not fitted)
    notes: dict = field(default_factory=dict)  # observation -> why it was not fitted

    def predict(self, features: np.ndarray) -> np.ndarray:
        """(images x 14) probabilities; NaN for an observation not fitted."""
        z = (features - self.mean) / self.sd
        out = np.full((len(features), len(OBSERVATIONS)), np.nan)
        for k, obs in enumerate(OBSERVATIONS):
            if obs in self.models:
                out[:, k] = self.models[obs].predict_proba(z)[:, 1]
        return out


def fit_pixel_learner(
    frame: pd.DataFrame,
    features: np.ndarray,
    policy: str = "U-Zeros",
    observations=OBSERVATIONS,
    seed: int = 0,
    subsample: float = 1.0,
    c: float = DEFAULT_C,
) -> PixelLearner:
    """Fit on ``frame``'s images (their ``features``) with ``policy``'s targets; see the module docstring."""
    keep = np.ones(len(frame), bool)
    if subsample < 1.0:
        patients = frame["patient"].unique()
        rng = np.random.default_rng(seed)
        chosen = rng.choice(patients, size=max(1, round(subsample * len(patients))), replace=False)
        keep = frame["patient"].isin(chosen).to_numpy()
    sub, x = frame[keep], features[keep]
    targets = get_policy(policy).targets(sub)
    mean = x.mean(axis=0)
    sd = x.std(axis=0) + 1e-3
    z = (x - mean) / sd
    learner = PixelLearner(policy, mean, sd)
    for obs in observations:
        k = OBSERVATIONS.index(obs)
        use = targets.mask[:, k] > 0
        y = targets.values[use, k] >= 0.5
        if min(int(y.sum()), int((~y).sum())) < MIN_CLASS:
            learner.notes[obs] = f"{int(y.sum())} positive / {int((~y).sum())} negative training targets"
            continue
        model = LogisticRegression(C=c, max_iter=300)
        learner.models[obs] = model.fit(z[use], y)
    return learner


def study_scores(frame: pd.DataFrame, probabilities: np.ndarray) -> pd.DataFrame:
    """Study x observation scores: max over a study's images (the original study's aggregation)."""
    return aggregate_studies(frame, probabilities, how="max")[1]
