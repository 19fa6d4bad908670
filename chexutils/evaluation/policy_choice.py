"""Per-observation choice between two uncertainty policies, each an arm of several seeds.

The selection set is a named criterion; only observations with enough positives there and enough
uncertain training labels are compared; the seed-aware DeLong tests are Holm-adjusted; a verdict
names a policy only where the adjusted test rejects, else the stated default, and always gives
the smallest difference the set could have detected. Two negative controls come with it.
"""

import itertools
import math

import numpy as np
import pandas as pd

from chexutils.core.errors import DataError
from chexutils.core.labels import OBSERVATIONS, UNCERTAIN
from chexutils.core.rundir import HELD_OUT, OFFICIAL_VALID
from chexutils.scoring.metrics import CI_MIN_POSITIVES, resample_counts
from chexutils.scoring.stats import (
    delong_test,
    hierarchical_deltas,
    holm,
    seed_arm_test,
    smallest_detectable,
)

CRITERIA = {
    "official-valid": "official valid set, radiologist labels (the true findings on the phantom); every study counts",
    "held-out-masked": "held-out patients of the re-split, report labels; blank and uncertain studies masked out",
    "held-out-truth": "held-out patients of the re-split scored against the phantom's true findings (phantom only)",
}
CRITERION_SPLIT = {"official-valid": OFFICIAL_VALID, "held-out-masked": HELD_OUT, "held-out-truth": HELD_OUT}
DEFAULT_POLICY = "U-Zeros"  # never ranks equivocal studies above clear positives (docs/statistics.md, inversion)
MIN_POSITIVES = 30  # in the smaller class of the selection set
MIN_UNCERTAIN = 0.01  # share of training images labelled uncertain; at or below it the targets barely differ
ALPHA = 0.05
NO_DIFFERENCE = "no detectable difference"
COMPARED = ("U-Zeros", "U-Ones")
DELTA = "U-Ones minus U-Zeros"
USEFUL_RATIO = 1.25  # seeds_note: a smallest detectable Δ within 25% of what unlimited seeds would give
MAX_SEEDS = 20  # seeds_note: the most seeds per arm it suggests


def scored_labels(criterion: str, study_labels: pd.DataFrame, truth: pd.DataFrame | None = None) -> pd.DataFrame:
    """Study x observation targets for a criterion: 1/0 scored, NaN masked (left out).

    official-valid: blank counts as 0, every study counts; held-out-masked: only certain report
    labels (1, 0) count; held-out-truth: the phantom's truth for the same studies (looked up by study).
    """
    if criterion not in CRITERIA:
        raise DataError(f"selection criterion {criterion!r} is unknown; expected one of {', '.join(CRITERIA)}")
    if criterion == "official-valid":
        return study_labels.fillna(0.0).where(study_labels != UNCERTAIN)
    if criterion == "held-out-masked":
        return study_labels.where(study_labels.isin([0.0, 1.0]))
    if truth is None:
        raise DataError(
            "held-out-truth needs the phantom's phantom_truth.csv; real CheXpert has no true findings, "
            "use official-valid or held-out-masked"
        )
    missing = study_labels.index.difference(truth.index)
    if len(missing):
        raise DataError(
            f"phantom_truth.csv lacks {len(missing)} held-out studies (first {missing[0]!r}); "
            "expected the truth of every study of the phantom"
        )
    return truth.loc[study_labels.index, list(study_labels.columns)].astype(float)


def uncertain_share(train_frame: pd.DataFrame) -> pd.Series:
    """Per observation: the share of training rows labelled uncertain (-1)."""
    return pd.Series({obs: float((train_frame[obs] == UNCERTAIN).mean()) for obs in OBSERVATIONS})


def compare_arms(
    labels: pd.DataFrame,
    arm_a: dict,
    arm_b: dict,
    groups: pd.Series | None = None,
    n_resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    names: tuple[str, str] = ("U-Zeros", "U-Ones"),
) -> pd.DataFrame:
    """Per observation: counts, each arm's mean AUROC and seed SD, and delta = mean(b) - mean(a).

    ``arm_a``/``arm_b`` map a seed to that run's study x observation scores (joined to ``labels``
    by study). ``p_value``, ``se``, ``df`` and ``ci_low``/``ci_high``: the seed-aware DeLong test
    (stats.seed_arm_test), clustered by ``groups`` (study -> patient) when given; its interval is
    delta -/+ t_{df} se, the same SE and df as the p-value, so the interval excludes 0 exactly when
    p < 1 - ``level``. ``bootstrap ci_low (secondary)``, ``bootstrap ci_high (secondary)``: percentile interval of
    the seeds x patients hierarchical bootstrap (stats.hierarchical_deltas), not what the verdict uses.
    """
    if not arm_a or not arm_b:
        raise DataError(f"each arm needs at least one run; got {len(arm_a)} {names[0]} and {len(arm_b)} {names[1]}")
    index = labels.index
    stacked = {}
    for name, arm in zip(names, (arm_a, arm_b)):
        for run_seed, scores in arm.items():
            missing = index.difference(scores.index)
            if len(missing):
                raise DataError(f"{name} seed {run_seed}: no scores for {len(missing)} studies (first {missing[0]!r})")
        stacked[name] = {
            obs: np.stack([arm[k].loc[index, obs].to_numpy(float) for k in sorted(arm)]) for obs in labels.columns
        }
    keys = None if groups is None else groups.reindex(index).to_numpy()
    counts = resample_counts(len(index), n_resamples, seed, keys)
    rng = np.random.default_rng(seed)
    rows = {}
    for obs in labels.columns:
        target = labels[obs].to_numpy(float)
        keep = np.isin(target, (0.0, 1.0))
        y = target[keep].astype(bool)
        row = {
            "positives": int(y.sum()),
            "negatives": int((~y).sum()),
            "patients": len(set(keys[keep])) if keys is not None else math.nan,
            "seeds": f"{len(arm_a)}+{len(arm_b)}",
        }
        runs_a, runs_b = stacked[names[0]][obs][:, keep], stacked[names[1]][obs][:, keep]
        if row["positives"] == 0 or row["negatives"] == 0:
            rows[obs] = row | {"note": f"one class only ({row['positives']} positives)"}
            continue
        test = seed_arm_test(y, runs_a, runs_b, None if keys is None else keys[keep], level)
        deltas = hierarchical_deltas(y, runs_a, runs_b, counts[:, keep], rng)
        finite = deltas[np.isfinite(deltas)]
        low, high = np.quantile(finite, [(1 - level) / 2, (1 + level) / 2]) if len(finite) else (math.nan, math.nan)
        rows[obs] = row | {
            f"{names[0]} mean": test["mean_a"],
            f"{names[0]} seed SD": test["sd_a"],
            f"{names[1]} mean": test["mean_b"],
            f"{names[1]} seed SD": test["sd_b"],
            f"{names[1]} minus {names[0]}": test["delta"],
            "ci_low": test["ci_low"],
            "ci_high": test["ci_high"],
            "bootstrap ci_low (secondary)": float(low),
            "bootstrap ci_high (secondary)": float(high),
            "se": test["se"],
            "se_study": test["se_study"],
            "se_seed": test["se_seed"],
            "seed_df": test["seed_df"],
            "df": test["df"],
            "p_value": test["p_value"],
            "note": "" if test["seed_df"] else "one seed per arm: seed noise not in the test",
        }
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "observation"
    return table


def choose(
    comparison: pd.DataFrame,
    uncertain: pd.Series | None,
    criterion: str,
    alpha: float = ALPHA,
    min_positives: int = MIN_POSITIVES,
    min_uncertain: float = MIN_UNCERTAIN,
    default: str = DEFAULT_POLICY,
) -> pd.DataFrame:
    """Add eligibility, Holm-adjusted p, smallest detectable difference, verdict and ``mapping``.

    Eligible: >= ``min_positives`` in the smaller class of the selection set and > ``min_uncertain``
    uncertain training labels (``uncertain`` None: not checked; column ``uncertain share checked``).
    ``comparison`` is compare_arms() with the default names (delta column DELTA). Holm runs over
    the eligible observations; the verdict names the better policy only where the adjusted p <
    ``alpha``, otherwise "no detectable difference" and ``mapping`` = ``default``. The smallest
    detectable difference is stats.smallest_detectable(se_study, se_seed, seed_df, alpha, m): 80%
    power of the test actually run (t at its Satterthwaite df) at Holm's first step alpha/m, m =
    observations tested; ``seeds note`` (seeds_note) says where the arms' few seeds, not the studies,
    keep it large, and how many seeds per arm would bring it down.
    """
    table = comparison.copy()
    smaller = np.minimum(table["positives"], table["negatives"])
    reasons = {}
    for obs in table.index:
        why = []
        if smaller[obs] < min_positives:
            why.append(f"{int(smaller[obs])} in the smaller class < {min_positives}")
        if uncertain is not None and not uncertain.get(obs, 0.0) > min_uncertain:
            why.append(f"{100 * uncertain.get(obs, 0.0):.1f}% uncertain training labels <= {100 * min_uncertain:g}%")
        if "p_value" not in table.columns or not np.isfinite(table.loc[obs].get("p_value", math.nan)):
            why.append("undefined (one class)")
        reasons[obs] = "; ".join(why)
    table["eligible"] = [not reasons[o] for o in table.index]
    table["reason"] = [reasons[o] for o in table.index]
    table["uncertain share checked"] = uncertain is not None
    p = table["p_value"].where(table["eligible"]) if "p_value" in table else pd.Series(math.nan, table.index)
    table["p_holm"] = holm(p.to_numpy(float))
    tests = int(table["eligible"].sum())
    table["smallest detectable"] = smallest_detectable(
        _column(table, "se_study"), _column(table, "se_seed", 0.0), _column(table, "seed_df", 0.0), alpha, tests
    )
    table["seeds note"] = [
        seeds_note(table.loc[o], alpha, tests) if table.loc[o, "eligible"] else "" for o in table.index
    ]
    delta = table[DELTA] if DELTA in table else pd.Series(math.nan, table.index)
    verdicts, mapping = [], []
    for obs in table.index:
        if not table.loc[obs, "eligible"]:
            verdicts.append(f"not compared ({table.loc[obs, 'reason']}): {default} by default")
            mapping.append(default)
        elif table.loc[obs, "p_holm"] < alpha:
            better = "U-Ones" if delta[obs] > 0 else "U-Zeros"
            verdicts.append(f"{better} (Holm p {table.loc[obs, 'p_holm']:.3g})")
            mapping.append(better)
        else:
            note = table.loc[obs, "seeds note"]
            verdicts.append(
                f"{NO_DIFFERENCE} (smallest detectable Δ {table.loc[obs, 'smallest detectable']:.3f}"
                + (f"; {note}" if note else "")
                + f"): {default} by default"
            )
            mapping.append(default)
    table["verdict"], table["mapping"] = verdicts, mapping
    table["choice"] = table["mapping"]
    table["criterion"], table["default"] = criterion, default
    return table


def _column(table: pd.DataFrame, name: str, fill: float = math.nan) -> np.ndarray:
    return (table[name] if name in table else pd.Series(fill, table.index)).to_numpy(float)


def arm_seeds(row) -> tuple[int, int]:
    """(seeds in arm a, seeds in arm b) from compare_arms' ``seeds`` ('3+2')."""
    a, _, b = str(row["seeds"]).partition("+")
    return int(a), int(b)


def seeds_note(row, alpha: float = ALPHA, tests: int = 1, power: float = 0.8) -> str:
    """Where the arms' few seeds keep the smallest detectable Δ large, a sentence saying so ('' elsewhere).

    Compares the smallest detectable Δ of the test as run (``row``: se_study, se_seed, seeds) with
    what unlimited seeds would give on the same studies (the z rule at se_study). Beyond
    USEFUL_RATIO times that, the seeds are the bottleneck: the note gives the seeds per arm (equal
    arms, the same pooled seed SD, at most MAX_SEEDS) that bring it within USEFUL_RATIO.
    """
    if not np.isfinite(row.get("se_seed", math.nan)) or not row.get("seed_df", 0) or not row["se_seed"] > 0:
        return ""
    k_a, k_b = arm_seeds(row)
    seed_sd = row["se_seed"] / math.sqrt(1 / k_a + 1 / k_b)
    now = smallest_detectable(row["se_study"], row["se_seed"], row["seed_df"], alpha, tests, power)
    best = smallest_detectable(row["se_study"], 0.0, 0, alpha, tests, power)
    if now <= USEFUL_RATIO * best:
        return ""
    seeds = f"{k_a} seeds per arm" if k_a == k_b else f"{k_a}+{k_b} seeds"
    text = (
        f"with {seeds} no Δ below {now:.3f} is detectable at {power:.0%} power "
        f"({best:.3f} with unlimited seeds on these studies)"
    )
    for k in range(max(k_a, k_b) + 1, MAX_SEEDS + 1):
        at_k = smallest_detectable(row["se_study"], seed_sd * math.sqrt(2 / k), 2 * k - 2, alpha, tests, power)
        if at_k <= USEFUL_RATIO * best:
            return text + f"; use {k} seeds per arm (smallest detectable Δ {at_k:.3f})"
    return text + f"; even {MAX_SEEDS} seeds per arm would not come within {USEFUL_RATIO - 1:.0%} of it"


def per_label_choice(
    arm_zeros: dict,
    arm_ones: dict,
    labels: pd.DataFrame,
    criterion: str,
    groups: pd.Series | None = None,
    uncertain: pd.Series | None = None,
    n_resamples: int = 2000,
    seed: int = 0,
    alpha: float = ALPHA,
    default: str = DEFAULT_POLICY,
) -> pd.DataFrame:
    """compare_arms + choose: the whole per-label table for one selection criterion."""
    comparison = compare_arms(labels, arm_zeros, arm_ones, groups, n_resamples, seed)
    return choose(comparison, uncertain, criterion, alpha, default=default)


def selected(choices: dict, criterion: str) -> pd.DataFrame:
    """The choice table of ``criterion``, or a DataError naming the criteria this sweep can offer."""
    if criterion not in choices:
        raise DataError(
            f"selection criterion {criterion!r} is not available here; available: {', '.join(choices)} "
            "(held-out criteria need held_out_csv; held-out-truth needs the phantom)"
        )
    return choices[criterion]


def below_floor(table: pd.DataFrame) -> pd.Series:
    """True where the smaller class of the selection set is below the CI floor: no Δ, CI or p is shown there."""
    return np.minimum(table["positives"], table["negatives"]) < CI_MIN_POSITIVES


def mapping_from(choice: pd.DataFrame) -> dict[str, str]:
    """{observation: policy} for the ``mixed`` policy, from choose()'s ``mapping`` column (all 14 named)."""
    if "mapping" not in choice.columns:
        raise DataError("the choice table has no 'mapping' column; build it with policy_choice.choose()")
    missing = [o for o in OBSERVATIONS if o not in choice.index]
    if missing:
        raise DataError(f"the choice table lacks {', '.join(missing)}; expected all 14 observations")
    return {obs: str(choice.loc[obs, "mapping"]) for obs in OBSERVATIONS}


def seed_noise_control(
    labels: pd.DataFrame,
    arm: dict,
    groups: pd.Series | None = None,
    alpha: float = ALPHA,
    min_positives: int = MIN_POSITIVES,
) -> pd.DataFrame:
    """Negative control: AUROC differences between seeds of ONE policy (identical training targets).

    Per observation with >= 10 in the smaller class (the CI floor): counts, seed pairs, mean and max
    abs Δ over pairs, and for the first pair a study-only
    DeLong p (clustered), Holm-adjusted over observations with >= ``min_positives``; ``flagged``
    says where a test that ignores training noise would call pure seed noise a difference.
    """
    seeds = sorted(arm)
    empty = pd.DataFrame(
        columns=["positives", "negatives", "pairs", "mean abs Δ", "max abs Δ", "p_value", "p_holm", "flagged"]
    )
    if len(seeds) < 2:
        return empty
    keys = None if groups is None else groups.reindex(labels.index).to_numpy()
    rows = {}
    for obs in labels.columns:
        target = labels[obs].to_numpy(float)
        keep = np.isin(target, (0.0, 1.0))
        y = target[keep].astype(bool)
        if min(y.sum(), (~y).sum()) < CI_MIN_POSITIVES:
            continue
        runs = {k: arm[k].loc[labels.index, obs].to_numpy(float)[keep] for k in seeds}
        g = None if keys is None else keys[keep]
        tests = [delong_test(y, runs[i], runs[j], g) for i, j in itertools.combinations(seeds, 2)]
        deltas = np.abs([t["delta"] for t in tests])
        rows[obs] = {
            "positives": int(y.sum()),
            "negatives": int((~y).sum()),
            "pairs": len(tests),
            "mean abs Δ": float(deltas.mean()),
            "max abs Δ": float(deltas.max()),
            "p_value": tests[0]["p_value"] if min(y.sum(), (~y).sum()) >= min_positives else math.nan,
        }
    if not rows:
        return empty
    table = pd.DataFrame.from_dict(rows, orient="index")
    table["p_holm"] = holm(table["p_value"].to_numpy(float))
    table["flagged"] = table["p_holm"] < alpha
    table.index.name = "observation"
    return table


def no_finding_control(choice: pd.DataFrame, alpha: float = ALPHA) -> str:
    """Negative control: No Finding has no uncertain labels, so both policies train it on identical targets."""
    if "No Finding" not in choice.index or not np.isfinite(choice.loc["No Finding"].get("p_value", math.nan)):
        return "No Finding control: undefined here (one class in the selection set)."
    row = choice.loc["No Finding"]
    if below_floor(choice).get("No Finding"):
        return (
            f"No Finding control: n/a here ({int(min(row['positives'], row['negatives']))} in the smaller "
            f"class < {CI_MIN_POSITIVES})."
        )
    flagged = row["p_value"] < alpha
    return (
        f"No Finding control (identical targets under both policies): Δ = {row[DELTA]:+.3f} "
        f"(95% CI {row['ci_low']:+.3f} to {row['ci_high']:+.3f}), unadjusted p = {row['p_value']:.3g} — "
        + (
            "FLAGGED: a change elsewhere or seed noise moves an untouched label this much; distrust "
            "differences of this size."
            if flagged
            else "not flagged, as it should be."
        )
    )


def criteria_agreement(choices: dict, expected: dict | None = None, alpha: float = ALPHA) -> pd.DataFrame:
    """Per observation: each criterion's Δ and verdict policy, and whether the criteria agree.

    ``choices`` maps a criterion name to its choose() table; ``expected`` (phantom) maps an
    observation to the expected better policy, shown beside. ``{criterion}: detected = expected``
    compares only what the criterion found: True/False where its Holm-adjusted test rejected
    (p_holm < ``alpha``) and the phantom expects a policy, empty elsewhere. (The mapping itself is
    not compared: where nothing is detected it is the default, so it "matches" an expected U-Zeros
    and never an expected "no material difference" by construction.)
    """
    columns = {}
    for criterion, table in choices.items():
        columns[f"{criterion}: Δ"] = (table[DELTA] if DELTA in table else pd.Series(math.nan, table.index)).mask(
            below_floor(table)
        )  # no Δ below the CI floor
        columns[f"{criterion}: choice"] = table["mapping"]
        columns[f"{criterion}: compared"] = table["eligible"]
    out = pd.DataFrame(columns).reindex([o for o in OBSERVATIONS if o in next(iter(choices.values())).index])
    picks = out[[f"{c}: choice" for c in choices]]
    out["criteria agree"] = picks.nunique(axis=1) == 1
    if expected:
        out["expected (phantom)"] = pd.Series(expected).reindex(out.index)
        policy = out["expected (phantom)"].isin(COMPARED)
        for criterion, table in choices.items():
            table = table.reindex(out.index)
            detected = table["eligible"].fillna(False).astype(bool) & (table["p_holm"] < alpha)
            same = (table["mapping"] == out["expected (phantom)"]).astype(object)
            out[f"{criterion}: detected = expected"] = same.where(detected & policy)
    out.index.name = "observation"
    return out


def verdict_summary(choice: pd.DataFrame, alpha: float = ALPHA) -> str:
    """A paragraph: the criterion, how many observations were tested, which differ, the rest's default."""
    criterion = choice["criterion"].iloc[0]
    tested = choice.index[choice["eligible"]]
    chosen = [f"{o}: {choice.loc[o, 'mapping']}" for o in tested if choice.loc[o, "p_holm"] < alpha]
    left = [o for o in choice.index if not choice.loc[o, "eligible"]]
    sdd = choice.loc[tested, "smallest detectable"]
    return (
        f"Selection criterion: **{criterion}** — {CRITERIA[criterion]}. "
        f"{len(tested)} observations tested (Holm over {len(tested)}, α = {alpha}); "
        + (f"a detectable difference for {'; '.join(chosen)}. " if chosen else "no detectable difference for any. ")
        + (f"Smallest detectable Δ (80% power): {sdd.min():.3f}–{sdd.max():.3f}. " if len(sdd) else "")
        + _seeds_sentence(choice.loc[tested])
        + f"Default where no difference is detected or nothing is compared: {choice['default'].iloc[0]}. "
        + f"Not compared: {', '.join(left) if left else 'none'}."
    )


def _seeds_sentence(tested: pd.DataFrame) -> str:
    """The first seeds note of the tested observations, as a sentence ('' when the seeds are not the limit)."""
    notes = [n for n in tested.get("seeds note", pd.Series(dtype=str)) if n]
    if not notes:
        return ""
    return f"Seeds, not studies, limit it for {len(notes)} observation(s): {notes[0][0].upper()}{notes[0][1:]}. "
