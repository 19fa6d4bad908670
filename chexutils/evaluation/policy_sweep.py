"""The per-label U-Zeros / U-Ones choice over a sweep's runs: each policy's seeds as one arm, one
selection set per criterion, the verdicts, the negative controls and the mapping for `mixed`.

`compare_policies` is what notebook 05 calls; on a grid without both policies it returns a
comparison that says why it was skipped instead of stopping the notebook.
"""

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from chexutils.core.errors import DataError
from chexutils.core.io import write_json, write_table
from chexutils.core.labels import COMPARED_POLICIES
from chexutils.core.rundir import HELD_OUT, OFFICIAL_VALID
from chexutils.evaluation import evaluate, policy_choice
from chexutils.evaluation.evaluate import RunScores, load_run_scores
from chexutils.evaluation.policy_choice import scored_labels
from chexutils.phantom import read_truth

MAPPING_JSON, CHOICE_CSV = "mixed_mapping.json", "policy_choice.csv"
MIN_SEEDS = 2  # per arm, for a mapping: with one seed the test cannot see training noise
BASELINE_RECIPE = "bce"  # compare.DEFAULT_RECIPE: the recipe label of the original study's training

CHOICE_COLUMNS = [
    "positives",
    "negatives",
    "patients",
    "seeds",
    "U-Zeros mean",
    "U-Zeros seed SD",
    "U-Ones mean",
    "U-Ones seed SD",
    policy_choice.DELTA,
    "ci_low",
    "ci_high",
    "p_value",
    "p_holm",
    "smallest detectable",
    "verdict",
]


def policy_arms(runs: pd.DataFrame, policies=COMPARED_POLICIES) -> dict[str, dict[int, Path]]:
    """{policy: {seed: run folder}} for the first backbone and size that has every policy (seeds = one arm);
    with a recipe column, within one recipe (the bce recipe first), so two losses' seeds never share an arm."""
    keys = ["recipe", "backbone", "image_size"] if "recipe" in runs else ["backbone", "image_size"]
    groups = sorted(runs.groupby(keys, sort=False), key=lambda item: item[0][0] != BASELINE_RECIPE)
    for _, group in groups if "recipe" in runs else runs.groupby(keys, sort=False):
        if set(policies) <= set(group["policy"]):
            return {
                p: {int(r["seed"]): Path(r["path"]) for _, r in group[group["policy"] == p].iterrows()}
                for p in policies
            }
    raise DataError(
        f"no backbone and size with runs of all of {', '.join(policies)} among {list(runs.index)}; "
        "the per-label choice needs both"
    )


def missing_arms(runs: pd.DataFrame, policies=COMPARED_POLICIES) -> str:
    """Why the sweep cannot compare ``policies`` ('' when some backbone and size has runs of each)."""
    present = sorted(set(runs["policy"])) if len(runs) else []
    absent = [p for p in policies if p not in present]
    if absent:
        return f"the grid has no {' or '.join(absent)} run (policies here: {', '.join(present) or 'none'})"
    try:
        policy_arms(runs, policies)
    except DataError:
        return f"no backbone and image size has runs of both {' and '.join(policies)}"
    return ""


def arm_scores(arm: dict, frame: pd.DataFrame, split: str) -> dict[int, pd.DataFrame]:
    """{seed: study x observation scores} of one arm's runs on ``split`` (predictions joined by Path)."""
    return {seed: load_run_scores(path, frame, split).study_scores for seed, path in arm.items()}


def phantom_truth(chexpert_dir) -> tuple[pd.DataFrame, dict] | None:
    """(study x observation true findings 0/1, expected better policy per observation), or None for real data."""
    truth = read_truth(chexpert_dir)
    return None if truth is None else (truth.findings, truth.expected)


def selection_sets(arms: dict, chexpert_dir, data_dir, held_out_csv="", truth=None) -> dict[str, dict]:
    """Per selection criterion available here: its targets, patient groups and each arm's scores.

    official-valid always (the runs' official-valid predictions); held-out-masked with a ``held_out_csv``
    (the runs' held-out predictions); held-out-truth with a ``held_out_csv`` on the phantom. Arms come from
    policy_arms(); studies and predictions are joined by key. ``truth``: phantom_truth(chexpert_dir), read
    here when not given.
    """
    splits = {OFFICIAL_VALID: evaluate.read_labels_csv(Path(chexpert_dir) / "valid.csv", data_dir)}
    if held_out_csv:
        splits[HELD_OUT] = evaluate.read_labels_csv(held_out_csv, data_dir)
    truth = phantom_truth(chexpert_dir) if truth is None else truth
    sets = {}
    for criterion, split in policy_choice.CRITERION_SPLIT.items():
        if split not in splits or (criterion == "held-out-truth" and truth is None):
            continue
        frame = splits[split]
        scores = {policy: arm_scores(arm, frame, split) for policy, arm in arms.items()}
        study_labels = load_run_scores(next(iter(next(iter(arms.values())).values())), frame, split).study_labels
        sets[criterion] = {
            "labels": scored_labels(criterion, study_labels, truth[0] if truth else None),
            "groups": frame.drop_duplicates("study").set_index("study")["patient"],
            "arms": scores,
        }
    return sets


def choose_policies(
    sets: dict,
    uncertain: pd.Series | None,
    n_resamples: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
    default: str = policy_choice.DEFAULT_POLICY,
) -> dict[str, pd.DataFrame]:
    """{criterion: policy_choice table} for every selection set (U-Zeros vs U-Ones, seeds as arms)."""
    return {
        criterion: policy_choice.per_label_choice(
            s["arms"]["U-Zeros"],
            s["arms"]["U-Ones"],
            s["labels"],
            criterion,
            s["groups"],
            uncertain,
            n_resamples,
            seed,
            alpha,
            default,
        )
        for criterion, s in sets.items()
    }


def seed_noise_controls(selection: dict, alpha: float = 0.05) -> pd.DataFrame:
    """Seed-to-seed Δ within each policy on one selection set (columns 'policy: ...'), empty if no arm has 2 seeds."""
    parts = {
        policy: policy_choice.seed_noise_control(selection["labels"], arm, selection["groups"], alpha)
        for policy, arm in selection["arms"].items()
    }
    parts = {p: t for p, t in parts.items() if not t.empty}
    if not parts:
        return pd.DataFrame()
    return pd.concat(parts, axis=1).pipe(lambda t: t.set_axis([f"{p}: {c}" for p, c in t.columns], axis=1))


def choice_view(choice: pd.DataFrame) -> pd.DataFrame:
    """The columns of a policy choice a reader needs (counts, arms, Δ with CI, p and Holm p, detectable Δ, verdict).

    Below the CI floor (fewer than 10 in the smaller class) only the counts and the verdict are shown.
    """
    view = choice.reindex(columns=CHOICE_COLUMNS)
    view.loc[policy_choice.below_floor(choice), CHOICE_COLUMNS[4:-1]] = np.nan
    return view


def mixed_mapping(choice: pd.DataFrame) -> dict[str, str]:
    """The mapping for the ``mixed`` policy: the verdict's policy per observation (the better one only
    where the Holm-adjusted test rejects; the stated default elsewhere), never the sign of Δ."""
    return policy_choice.mapping_from(choice)


def per_label_choice(
    zeros: RunScores,
    ones: RunScores,
    frame: pd.DataFrame,
    n_resamples: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
    labels: pd.DataFrame | None = None,
    criterion: str = "held-out-masked",
    uncertain: pd.Series | None = None,
) -> pd.DataFrame:
    """One run per policy: policy_choice.per_label_choice with single-seed arms (seed noise not in the test).

    ``labels`` (default: ``criterion``'s targets from the split's report labels) may be replaced,
    e.g. by the phantom's truth (then name the criterion 'held-out-truth').
    """
    targets = (
        scored_labels(criterion, zeros.study_labels)
        if labels is None
        else labels.loc[zeros.study_labels.index].astype(float)
    )
    groups = frame.drop_duplicates("study").set_index("study")["patient"]
    return policy_choice.per_label_choice(
        {0: zeros.study_scores}, {0: ones.study_scores}, targets, criterion, groups, uncertain, n_resamples, seed, alpha
    )


@dataclass
class PolicyComparison:
    """Everything notebook 05 shows of the per-label choice; ``skipped`` says why it is empty."""

    criterion: str
    skipped: str = ""
    choices: dict = field(default_factory=dict)  # {criterion: choose() table}
    seed_noise: pd.DataFrame = field(default_factory=pd.DataFrame)
    agreement: pd.DataFrame = field(default_factory=pd.DataFrame)
    summary: str = ""
    no_finding: str = ""

    @property
    def seeds_per_arm(self) -> int:
        """The fewest seeds in either arm of the named criterion's comparison (0 when skipped)."""
        if self.skipped or "seeds" not in self.choice:
            return 0
        return min(min(policy_choice.arm_seeds(row)) for _, row in self.choice.iterrows())

    @property
    def exploratory(self) -> str:
        """Why the choice is only exploratory ('' when it may feed ``mixed``): fewer than MIN_SEEDS per arm."""
        if self.skipped or self.seeds_per_arm >= MIN_SEEDS:
            return ""
        return (
            f"exploratory: {self.seeds_per_arm} seed per arm, so the test cannot see training noise; "
            f"no {MAPPING_JSON} is written (the grid needs at least {MIN_SEEDS} seeds per policy)"
        )

    @property
    def choice(self) -> pd.DataFrame:
        """The table of the named criterion (empty when skipped)."""
        return self.choices.get(self.criterion, pd.DataFrame())

    @property
    def table(self) -> pd.DataFrame:
        """What a reader needs of the named criterion's table (choice_view), empty when skipped."""
        return choice_view(self.choice) if self.choices else pd.DataFrame(columns=CHOICE_COLUMNS)

    def sections(self) -> dict:
        """The comparison report's sections of the per-label choice (only the reason when skipped)."""
        title = f"Per-label choice ({self.criterion})"
        if self.skipped:
            return {title: self.skipped}
        label = f" — {self.exploratory}" if self.exploratory else ""
        return {
            title + label: self.summary,
            f"Per-label choice table ({self.criterion}){label}": self.table,
            "Negative control: No Finding": self.no_finding,
            "Negative control: seed-to-seed Δ within a policy (study-only DeLong, Holm)": self.seed_noise
            if len(self.seed_noise)
            else "not available: fewer than 2 seeds per policy, or no observation with >= 10 in the smaller class",
            "Agreement between selection criteria": self.agreement,
        }

    def write(self, sweep) -> dict[str, str] | None:
        """``mixed_mapping.json`` and ``policy_choice.csv`` in the sweep folder; when skipped, an
        earlier sweep's mapping is removed so a second stage cannot train on a stale choice. With
        fewer than MIN_SEEDS seeds per arm (``exploratory``) only the table is written, with an
        ``exploratory`` column, and no mapping (an earlier one is removed): None is returned."""
        sweep = Path(sweep)
        if self.skipped:
            for name in (MAPPING_JSON, CHOICE_CSV):
                (sweep / name).unlink(missing_ok=True)
            return None
        if self.exploratory:
            (sweep / MAPPING_JSON).unlink(missing_ok=True)
            write_table(self.choice.assign(exploratory=self.exploratory), sweep / CHOICE_CSV)
            return None
        mapping = mixed_mapping(self.choice)
        write_json(sweep / MAPPING_JSON, mapping)
        write_table(self.choice, sweep / CHOICE_CSV)
        return mapping


def compare_policies(
    runs: pd.DataFrame,
    chexpert_dir,
    data_dir,
    held_out_csv,
    train_csv,
    criterion: str = "official-valid",
    n_resamples: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
    default: str = policy_choice.DEFAULT_POLICY,
) -> PolicyComparison:
    """U-Zeros vs U-Ones per observation on every selection set here, verdicts on ``criterion``, the
    negative controls and the agreement between criteria; skipped with a note on a one-sided grid."""
    if criterion not in policy_choice.CRITERIA:
        raise DataError(
            f"selection criterion {criterion!r} is unknown; expected one of {', '.join(policy_choice.CRITERIA)}"
        )
    why = missing_arms(runs)
    if why:
        note = f"Per-label choice skipped: {why}; it compares U-Zeros with U-Ones, so the grid needs both."
        return PolicyComparison(criterion, skipped=note, summary=note, no_finding=note)
    uncertain = policy_choice.uncertain_share(evaluate.read_labels_csv(train_csv, data_dir))
    truth = phantom_truth(chexpert_dir)  # read once: the phantom's per-study truth is a large CSV
    sets = selection_sets(policy_arms(runs), chexpert_dir, data_dir, held_out_csv, truth)
    choices = choose_policies(sets, uncertain, n_resamples, seed, alpha, default)
    choice = policy_choice.selected(choices, criterion)
    comparison = PolicyComparison(
        criterion,
        choices=choices,
        seed_noise=seed_noise_controls(sets[criterion], alpha),
        agreement=policy_choice.criteria_agreement(choices, truth[1] if truth else None, alpha),
        summary=policy_choice.verdict_summary(choice, alpha),
        no_finding=policy_choice.no_finding_control(choice, alpha),
    )
    if comparison.exploratory:
        comparison.summary = f"**Exploratory** ({comparison.exploratory}). {comparison.summary}"
    return comparison


def compare_policies_by_recipe(runs: pd.DataFrame, *args, **kwargs) -> dict[str, PolicyComparison]:
    """``compare_policies`` within each recipe of the sweep (``compare.recipe_label``: loss, recipe and the
    other training axes), the baseline (``bce``) first: the same seed-aware test, Holm over the labels of
    each recipe's own comparison. A sweep without a recipe column is one recipe, ``bce``."""
    if "recipe" not in runs:
        runs = runs.assign(recipe=BASELINE_RECIPE)
    order = sorted(runs["recipe"].unique(), key=lambda r: (r != BASELINE_RECIPE, r))
    return {recipe: compare_policies(runs[runs["recipe"] == recipe], *args, **kwargs) for recipe in order}


def baseline_comparison(by_recipe: dict[str, PolicyComparison]) -> PolicyComparison:
    """The comparison whose verdicts feed ``mixed`` (mixed_mapping.json): the bce recipe's, else the first."""
    return by_recipe.get(BASELINE_RECIPE) or next(iter(by_recipe.values()))


def verdicts_by_recipe(by_recipe: dict[str, PolicyComparison]) -> pd.DataFrame:
    """Per observation (rows) and recipe (columns): the verdict with Δ (U-Ones minus U-Zeros) and its CI,
    and whether the verdict differs between recipes: the answer to "does the better policy per observation
    change when the loss changes?" (a change needs a detected difference in at least one recipe; two
    "no detectable difference" verdicts are no change)."""
    columns = {}
    verdicts = {}
    for recipe, comparison in by_recipe.items():
        choice = comparison.choice
        if comparison.skipped or choice.empty:
            continue
        verdicts[recipe] = choice["verdict"].astype(str).map(_detected)
        columns[recipe] = [
            f"{row['verdict']} (Δ {row[policy_choice.DELTA]:+.3f} [{row['ci_low']:+.3f}, {row['ci_high']:+.3f}])"
            if np.isfinite(row.get(policy_choice.DELTA, np.nan))
            else str(row["verdict"])
            for _, row in choice.iterrows()
        ]
        columns[recipe] = pd.Series(columns[recipe], index=choice.index)
    if not columns:
        return pd.DataFrame()
    table = pd.DataFrame(columns)
    table["verdict changes"] = pd.DataFrame(verdicts).nunique(axis=1) > 1 if len(verdicts) > 1 else False
    return table


def _detected(verdict: str) -> str:
    """The policy a verdict detected ('U-Ones', 'U-Zeros'), else 'none' (no difference, not compared)."""
    first = verdict.split(" (")[0]
    return first if first in COMPARED_POLICIES else "none"
