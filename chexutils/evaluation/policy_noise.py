"""What CheXpert's measured label noise implies for U-Zeros against U-Ones: the phantom's expected-target
model (``chexutils.phantom.expected``) fed with the public test set's measured rates.

The model: a learner learns, for each kind of image it can tell apart, the expected training target of
that kind; a study scores its kind's target plus N(0, tau^2) noise, tau over ``expected.NOISE_SDS`` (the
module's family of learners: sharp to blurry); delta = AUROC(U-Ones) - AUROC(U-Zeros) against the
5-radiologist majority follows from the pair counts of truly positive and negative studies per kind.
``expected.verdict`` turns the deltas into a policy, "no material difference" or "setting-dependent".

Two ways to say what a "kind of image" is on real data, both from the 500 public studies:

- ``report``: the learner sees what the reporting radiologist saw, so its kinds are the report labels
  (positive / negative / uncertain / blank) with P(truly positive | report label) as measured. The
  targets are then the labels themselves (U-Zeros: uncertain -> 0, U-Ones: uncertain -> 1; blank -> 0 as
  the CheXpert paper trains), so delta comes from where the uncertain studies are ranked and hardly
  depends on tau.
- ``benchmark votes``: the learner sees what independent radiologists see, so its kinds are the number
  of the 3 benchmark radiologists (not in the reference) reading the study positive; each kind's target
  is the mean of its studies' report targets, as in the phantom (faint and mimic alike share a target).

Intervals: percentile bootstrap over the studies (one per patient), the whole derivation redone per
resample, so they carry the sampling noise of the measured rates (not the learner's).
"""

import numpy as np
import pandas as pd
from scipy.stats import norm

from chexutils.core.labels import OBSERVATIONS
from chexutils.data.test_set_files import BENCHMARK_READERS
from chexutils.evaluation.public_labels import REPORT_CODES, PublicFiles, ci_text
from chexutils.evaluation.references import CHEXPERT_PAPER_POLICIES, reference_table
from chexutils.phantom import expected
from chexutils.scoring.metrics import percentile_interval, resample_counts

# The training target of each report label under the two compared policies (blank = negative).
POLICY_TARGETS = {
    "U-Zeros": {"positive": 1.0, "negative": 0.0, "uncertain": 0.0, "blank": 0.0},
    "U-Ones": {"positive": 1.0, "negative": 0.0, "uncertain": 1.0, "blank": 0.0},
}
KINDS = ("report", "benchmark votes")


def kind_auroc(positives, negatives, targets, tau: float) -> np.ndarray:
    """AUROC against the truth when each study scores its kind's target + N(0, tau^2), one value per row.

    ``positives`` / ``negatives`` / ``targets``: (rows x kinds) truly positive and negative counts and
    targets per kind. The pair sum of ``expected.auroc_from_kinds``, over any number of kinds."""
    positives, negatives, targets = (np.atleast_2d(np.asarray(x, float)) for x in (positives, negatives, targets))
    pairs = norm.cdf((targets[:, :, None] - targets[:, None, :]) / (tau * np.sqrt(2)))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.einsum("ra,rab,rb->r", positives, pairs, negatives) / (positives.sum(1) * negatives.sum(1))


def kind_deltas(kinds, truth, report, taus=expected.NOISE_SDS, weights=None) -> np.ndarray:
    """(rows of ``weights`` x taus) delta = AUROC(U-Ones) - AUROC(U-Zeros) for per-study ``kinds``, 0/1
    ``truth`` and ``report`` labels (1 / 0 / -1 / NaN); each kind's target is its studies' mean report target."""
    kinds, truth = np.asarray(kinds), np.asarray(truth).astype(bool)
    labels = pd.Series(np.asarray(report, float)).map(REPORT_CODES).fillna("blank").to_numpy()
    onehot = (kinds[:, None] == np.unique(kinds)[None, :]).astype(float)
    w = np.ones((1, len(kinds))) if weights is None else np.asarray(weights, float)
    positives, negatives = w @ (onehot * truth[:, None]), w @ (onehot * ~truth[:, None])
    studies = positives + negatives
    targets = {}
    for policy, mapping in POLICY_TARGETS.items():
        target = np.array([mapping[label] for label in labels])
        with np.errstate(divide="ignore", invalid="ignore"):
            targets[policy] = np.nan_to_num((w @ (onehot * target[:, None])) / studies)  # an empty kind has no pairs
    return np.column_stack(
        [
            kind_auroc(positives, negatives, targets["U-Ones"], tau)
            - kind_auroc(positives, negatives, targets["U-Zeros"], tau)
            for tau in taus
        ]
    )


def study_kinds(files: PublicFiles, obs: str, kind: str) -> np.ndarray:
    """Per study, its kind for ``obs``: the report label, or how many benchmark radiologists read it positive."""
    if kind == "report":
        return files.report[obs].map(REPORT_CODES).fillna("blank").to_numpy()
    if kind == "benchmark votes":
        return sum(files.readers[r][obs].to_numpy() for r in BENCHMARK_READERS).astype(int)
    raise ValueError(f"unknown kind {kind!r}; known: {', '.join(KINDS)}")


def policy_implication(
    files: PublicFiles,
    kind: str = "report",
    taus=expected.NOISE_SDS,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> pd.DataFrame:
    """Per observation with uncertain report labels: delta at each noise SD with a bootstrap CI, the
    verdict (``expected.verdict``) and a plain statement; also the measured uncertain / blank / positive
    rates (truly positive / studies)."""
    counts = resample_counts(len(files.truth), n_resamples, seed)
    rows = []
    for obs in OBSERVATIONS:
        report, truth = files.report[obs], files.truth[obs]
        if not (report == -1).any():
            continue  # no uncertain label: both policies train on the same targets
        kinds = study_kinds(files, obs, kind)
        point, boot = kind_deltas(kinds, truth, report, taus)[0], kind_deltas(kinds, truth, report, taus, counts)
        row = {"observation": obs}
        for code, label in ((-1.0, "uncertain"), (np.nan, "blank"), (1.0, "positive")):
            picked = truth[report.isna()] if label == "blank" else truth[report == code]
            row[label] = f"{int(picked.sum())}/{len(picked)}"
        lows, highs = np.array([percentile_interval(boot[:, j], level) for j in range(len(taus))]).T
        for j, tau in enumerate(taus):
            row[f"delta tau={tau}"] = ci_text(point[j], lows[j], highs[j], 3, signed=True)
        row["verdict"] = expected.verdict(point)
        row["established"] = established(row["verdict"], lows, highs)
        row["statement"] = statement(row["verdict"], point, lows, highs)
        rows.append(row)
    return pd.DataFrame(rows).set_index("observation")


def established(verdict: str, lows, highs) -> bool:
    """Whether every CI agrees with the verdict: a policy's excludes 0 on its side; no difference's lies inside ±MATERIAL."""
    lows, highs = np.asarray(lows, float), np.asarray(highs, float)
    if verdict == expected.NO_DIFFERENCE:
        return bool(np.all((lows > -expected.MATERIAL) & (highs < expected.MATERIAL)))
    if verdict in POLICY_TARGETS:
        sign = 1 if verdict == "U-Ones" else -1
        return bool(np.all(sign * lows > 0) and np.all(sign * highs > 0))
    return False


def statement(verdict: str, deltas, lows, highs) -> str:
    """The verdict in words, saying whether the measured rates' sampling noise could overturn it."""
    deltas, lows, highs = (np.asarray(x, float) for x in (deltas, lows, highs))
    span = f"delta {deltas.min():+.3f} to {deltas.max():+.3f}"
    held = established(verdict, lows, highs)
    if verdict == expected.NO_DIFFERENCE:
        if held:
            return f"no material difference ({span}; every CI inside ±{expected.MATERIAL})"
        return f"no material difference ({span}), though a CI reaches {max(-lows.min(), highs.max()):.3f}"
    if verdict in POLICY_TARGETS:
        how = "every CI excludes 0" if held else "a CI includes 0: not established by 500 studies"
        return f"{verdict} ({span}; {how})"
    return f"depends on the learner ({span})"


def _verdict_text(verdict: str, held: bool) -> str:
    if held:
        return verdict
    return f"{verdict} ({'a CI reaches beyond ±' + str(expected.MATERIAL) if verdict == expected.NO_DIFFERENCE else 'a CI includes 0'})"


def beside_papers(implications: dict) -> pd.DataFrame:
    """Verdicts per kind model beside the CheXpert paper's per-task findings and the original study's
    U-Ones - U-Zeros on the official valid set (both published, from ``references``)."""
    out = pd.DataFrame(
        {
            f"expected ({kind})": [_verdict_text(v, held) for v, held in zip(table["verdict"], table["established"])]
            for kind, table in implications.items()
        }
    )
    paper = {
        t: f"best {p} ({auc:.3f}){'; ' + test if test else ''}" for t, (p, auc, test) in CHEXPERT_PAPER_POLICIES.items()
    }
    out["CheXpert paper (valid)"] = [paper.get(o, "") for o in out.index]
    refs = reference_table()
    zeros, ones = "original study DenseNet121-224 U-Zeros", "original study DenseNet121-224 U-Ones"
    if {zeros, ones} <= set(refs.columns):
        delta = (refs[ones] - refs[zeros]).reindex(out.index)
        out["original study U-Ones - U-Zeros (valid, 224)"] = [f"{d:+.2f}" if pd.notna(d) else "" for d in delta]
    return out
