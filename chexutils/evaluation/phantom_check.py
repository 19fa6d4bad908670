"""On the phantom, does the per-label policy comparison recover the known answer? The positive
control found, the null controls shown equivalent (the 95% CI of their Δ inside ±EQUIVALENCE_MARGIN;
"not checkable" below the floor), and how often the certain-label choice agrees with the choice
the true findings support (with a Wilson CI).

A policy's runs (one per seed) form one arm: their probabilities are averaged per image.
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd

from chexutils.core.io import write_json
from chexutils.core.labels import COMPARED_POLICIES
from chexutils.evaluation import policy_choice
from chexutils.evaluation.compare import markdown
from chexutils.evaluation.evaluate import load_run_scores
from chexutils.evaluation.policy_sweep import arm_scores
from chexutils.phantom import PhantomTruth
from chexutils.scoring.stats import binary_kappa, wilson_interval

NO_DETECTABLE = policy_choice.NO_DIFFERENCE
CHECK_JSON, CHECK_MD = "phantom_check.json", "phantom_check.md"
KINDS = ("none", "mimic", "faint", "clear")  # latent kinds, in the order a perfect learner would rank them
POLICY_ORDER = ("U-Zeros", "U-Ones")
TELLS_APART = 0.5  # faint-mimic gap at least this share of the faint-none gap: the learner tells them apart
SEEN = 0.5  # faint signs score at least this many logits above no sign: the learner sees them at all
# A null control passes when the 95% CI of its Δ (the seed-aware test's unadjusted t interval) lies
# inside ±EQUIVALENCE_MARGIN: an equivalence test (two one-sided tests at 2.5% each). Not being
# flagged by a Holm-adjusted test is no evidence of no effect (a wide CI is never flagged).
EQUIVALENCE_MARGIN = 0.02
CHECKABLE_MIN = policy_choice.MIN_POSITIVES  # in the smaller class; below it a control is "not checkable"
EQUIVALENT, NOT_EQUIVALENT, NOT_CHECKABLE = "equivalent", "not shown equivalent", "not checkable"
HOLM_FAMILY = f"Holm over the observations with >= {policy_choice.MIN_POSITIVES} in the smaller class"


def choices(
    arms: dict,
    frame: pd.DataFrame,
    eval_set: str,
    labels: pd.DataFrame | None = None,
    criterion: str = "held-out-masked",
    n_resamples: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """U-Ones vs U-Zeros per observation with each policy's seeds as one arm (policy_choice: seed-aware
    DeLong, Holm over the eligible observations), plus ``sign`` of delta, ``decision`` (the better
    policy where the adjusted test rejects, else "no detectable difference") and ``n`` studies.

    ``arms``: policy_sweep.policy_arms(); ``labels``: targets to score against (default: the criterion's
    targets from the set's report labels, e.g. the phantom's truth with criterion 'held-out-truth').
    """
    scores = {policy: arm_scores(arm, frame, eval_set) for policy, arm in arms.items()}
    first = next(iter(arms["U-Zeros"].values()))
    study_labels = load_run_scores(first, frame, eval_set).study_labels
    targets = (
        policy_choice.scored_labels(criterion, study_labels)
        if labels is None
        else labels.loc[study_labels.index].astype(float)
    )
    groups = frame.drop_duplicates("study").set_index("study")["patient"]
    table = policy_choice.per_label_choice(
        scores["U-Zeros"], scores["U-Ones"], targets, criterion, groups, None, n_resamples, seed, alpha
    )
    delta = table[policy_choice.DELTA] if policy_choice.DELTA in table else pd.Series(np.nan, table.index)
    table["sign"] = np.where(delta.isna(), "undefined", np.where(delta > 0, "U-Ones", "U-Zeros"))
    table["decision"] = np.where(table["eligible"] & (table["p_holm"] < alpha), table["sign"], NO_DETECTABLE)
    table["n"] = table["positives"] + table["negatives"]
    return table


def kind_scores(arms: dict, frame: pd.DataFrame, eval_set: str, categories: pd.DataFrame) -> pd.DataFrame:
    """What the runs learned per latent kind: per observation and policy, the mean logit of the arm's
    study scores for none / mimic / faint / clear studies (with counts), and where mimic sits between
    none and faint: ``faint-mimic share`` = (faint - mimic) / (faint - none), 0 when the learner scores
    mimics like faint signs (the look-alike premise of the expected answer), 1 when like no sign; NaN
    where faint signs score less than SEEN logits above no sign (the runs do not see them at all)."""
    rows = []
    for policy, arm in arms.items():
        runs = arm_scores(arm, frame, eval_set)
        mean = (sum(runs.values()) / len(runs)).clip(1e-6, 1 - 1e-6)
        logits = np.log(mean / (1 - mean))
        kinds = categories.reindex(logits.index)
        for obs in categories.columns:
            by_kind = logits[obs].groupby(kinds[obs]).agg(["mean", "size"]).reindex(list(KINDS))
            m = by_kind["mean"]
            spread = m["faint"] - m["none"]
            rows.append(
                {
                    "observation": obs,
                    "policy": policy,
                    **{k: m[k] for k in KINDS},
                    "studies none/mimic/faint/clear": "/".join(str(int(n)) for n in by_kind["size"].fillna(0)),
                    "faint - none": spread,
                    "faint-mimic share": (m["faint"] - m["mimic"]) / spread if spread >= SEEN else np.nan,
                }
            )
    return pd.DataFrame(rows).set_index(["observation", "policy"])


def faint_unseen(kinds: pd.DataFrame, seen: float = SEEN) -> list[str]:
    """Observations whose faint signs no arm scores ``seen`` logits above no sign: the runs cannot rank
    them at all, so neither policy can win by them (the expected answer assumes a learner that sees them)."""
    spread = kinds["faint - none"].unstack("policy")
    return [str(o) for o in spread.index if (spread.loc[o] < seen).all()]


def premise_violated(kinds: pd.DataFrame, threshold: float = TELLS_APART) -> list[str]:
    """Observations where every arm tells faint from mimic (share >= ``threshold``): there the expected
    answer's premise — faint and mimic look alike to the learner — does not hold for these runs."""
    share = kinds["faint-mimic share"].unstack("policy")
    return [str(o) for o in share.index if share.loc[o].notna().all() and (share.loc[o] >= threshold).all()]


def agreement(first: pd.Series, second: pd.Series) -> dict:
    """Share of observations where two choices agree (both defined), with a 95% Wilson interval, the
    agreement expected by chance from the two choices' shares of U-Ones (``chance``) and Cohen's kappa
    (stats.binary_kappa; NaN where a choice is constant)."""
    both = first.index[(first != "undefined") & (second.reindex(first.index) != "undefined")]
    same = int((first[both] == second[both]).sum())
    low, high = wilson_interval(same, len(both))
    a, b = (first[both] == "U-Ones").to_numpy(), (second.reindex(both) == "U-Ones").to_numpy()
    chance = float(a.mean() * b.mean() + (1 - a.mean()) * (1 - b.mean())) if len(both) else float("nan")
    return {
        "agree": same,
        "of": len(both),
        "rate": same / len(both) if len(both) else float("nan"),
        "ci_low": low,
        "ci_high": high,
        "chance": chance,
        "kappa": float(binary_kappa(a, b)[0]) if len(both) else float("nan"),
    }


def _agreement_text(a: dict) -> str:
    if not a["of"]:
        return "0 observations with both defined"
    return (
        f"{a['agree']} of {a['of']} = {a['rate']:.2f} (95% Wilson CI {a['ci_low']:.2f}–{a['ci_high']:.2f}; "
        f"chance agreement {a['chance']:.2f}, Cohen's κ {_fmt(a['kappa'])})"
    )


def _fmt(value) -> str:
    return "undefined (a choice is constant)" if not np.isfinite(value) else f"{value:.2f}"


def check(
    truth: PhantomTruth,
    selected: pd.DataFrame,
    from_truth: pd.DataFrame,
    from_labels: pd.DataFrame,
    selection: str,
    alpha: float = 0.05,
    sizing: pd.DataFrame | None = None,
    kinds: pd.DataFrame | None = None,
    plan_seed_sd: float | None = None,
) -> tuple[pd.DataFrame, dict]:
    """Per-observation table and the checks: positive control recovered on ``selected`` (the selection set),
    null controls not flagged there, agreement of certain-label and truth choices (signs).

    ``sizing`` (`chexutils.evaluation.power.power_table`) adds the studies each expected effect needs beside the
    studies the selection set has; ``kinds`` (kind_scores) adds where the expected answer's premise failed;
    ``plan_seed_sd`` (the seed SD the sizing assumed) is reported beside the seed SDs the runs measured for the
    positive control and the smallest Δ detectable at them, so a sizing built on a wrong guess shows as such."""
    table = pd.DataFrame(
        {
            "expected": pd.Series(truth.expected),
            f"{selection}: delta": selected["U-Ones minus U-Zeros"],
            f"{selection}: p (Holm)": selected["p_holm"],
            f"{selection}: decision": selected["decision"],
            "truth (held-out): sign": from_truth["sign"],
            "certain labels (held-out): sign": from_labels["sign"],
        }
    ).reindex(list(truth.expected))
    if sizing is not None:
        table["studies needed (power 0.8, Holm)"] = sizing["studies needed"].reindex(table.index)
    primary = truth.primary_positive_control
    recovered = primary is not None and selected.loc[primary, "decision"] == truth.expected[primary]
    nulls = {o: null_verdict(selected.loc[o]) for o in truth.null_controls}
    flagged = [o for o in truth.null_controls if selected.loc[o, "decision"] != NO_DETECTABLE]
    expected_known = [o for o, v in truth.expected.items() if v in ("U-Zeros", "U-Ones")]
    checks = {
        "selection set": selection,
        "studies in the selection set": int(selected["n"].max()),
        "alpha": alpha,
        "studies needed for the positive control": (
            float(sizing.loc[primary, "studies needed"]) if sizing is not None and primary in sizing.index else None
        ),
        "correction": HOLM_FAMILY,
        "planned seed SD": plan_seed_sd,
        "positive control seed SD (measured)": _measured_seed_sd(selected, primary),
        "positive control smallest detectable delta (measured seed SD)": (
            float(selected.loc[primary, "smallest detectable"])
            if primary is not None and "smallest detectable" in selected
            else None
        ),
        "positive control": primary,
        "positive control recovered": bool(recovered),
        "positive controls recovered": {
            o: bool(selected.loc[o, "decision"] == truth.expected[o]) for o in truth.positive_controls
        },
        "equivalence margin": EQUIVALENCE_MARGIN,
        "null control verdicts": nulls,
        "null controls": truth.null_controls,
        "null controls equivalent": null_status(nulls),
        "null controls flagged (Holm, for reference)": flagged,
        "observations with an expected effect": expected_known,
        "agreement certain labels vs truth (held-out, signs)": agreement(
            from_labels["sign"].reindex(expected_known).fillna("undefined"),
            from_truth["sign"].reindex(expected_known).fillna("undefined"),
        ),
        "agreement truth (held-out) sign vs expected": agreement(
            from_truth["sign"].reindex(expected_known).fillna("undefined"),
            pd.Series(truth.expected).reindex(expected_known),
        ),
        "premise violated (the runs tell faint from mimic)": None if kinds is None else premise_violated(kinds),
        "premise violated (the runs do not see faint signs)": None if kinds is None else faint_unseen(kinds),
    }
    table[f"null control (95% CI of Δ within ±{EQUIVALENCE_MARGIN})"] = pd.Series(
        {o: v["verdict"] for o, v in nulls.items()}
    ).reindex(table.index)
    if kinds is not None:
        share = kinds["faint-mimic share"].unstack("policy")
        table["faint-mimic share (U-Zeros / U-Ones)"] = [
            " / ".join("–" if np.isnan(v) else f"{v:.2f}" for v in share.reindex(columns=list(POLICY_ORDER)).loc[o])
            if o in share.index
            else "–"
            for o in table.index
        ]
    return table, checks


def null_verdict(row, margin: float = EQUIVALENCE_MARGIN, floor: int = CHECKABLE_MIN) -> dict:
    """A null control judged by equivalence: 'equivalent' when the 95% CI of Δ lies inside ±``margin``,
    'not shown equivalent' when it does not, 'not checkable' below ``floor`` in the smaller class or
    without a defined Δ (never a pass). ``row``: one observation of choices() / per_label_choice."""
    smaller = int(min(row.get("positives", 0), row.get("negatives", 0)))
    delta = float(row.get(policy_choice.DELTA, np.nan))
    low, high = float(row.get("ci_low", np.nan)), float(row.get("ci_high", np.nan))
    p = float(row.get("p_value", np.nan))  # shown beside, for reference; the verdict is the equivalence
    out = {"delta": delta, "ci_low": low, "ci_high": high, "smaller class": smaller, "p (unadjusted)": p}
    if smaller < floor:
        return out | {"verdict": NOT_CHECKABLE, "why": f"{smaller} in the smaller class < {floor}"}
    if not (np.isfinite(low) and np.isfinite(high)):
        return out | {"verdict": NOT_CHECKABLE, "why": "no interval for Δ"}
    inside = -margin <= low and high <= margin
    return out | {
        "verdict": EQUIVALENT if inside else NOT_EQUIVALENT,
        "why": f"95% CI {low:+.3f} to {high:+.3f} {'inside' if inside else 'not inside'} ±{margin}",
    }


def null_status(verdicts: dict) -> str:
    """'PASS' when every null control is shown equivalent, 'FAIL' when one is not, else 'NOT CHECKABLE'."""
    kinds = {v["verdict"] for v in verdicts.values()}
    if NOT_EQUIVALENT in kinds:
        return "FAIL"
    if kinds == {EQUIVALENT}:
        return "PASS"
    return "NOT CHECKABLE"


def write_check(output_dir, table: pd.DataFrame, checks: dict) -> Path:
    """``phantom_check.json`` and ``phantom_check.md`` (the runner's report includes the latter)."""
    output_dir = Path(output_dir)
    write_json(output_dir / CHECK_JSON, json.loads(json.dumps(checks, default=float)))
    a = checks["agreement certain labels vs truth (held-out, signs)"]
    b = checks["agreement truth (held-out) sign vs expected"]
    lines = [
        "## Phantom check: does the comparison recover the known answer?",
        "",
        f"Selection set: {checks['selection set']} ({checks['studies in the selection set']} studies; the positive "
        f"control needs {_studies(checks['studies needed for the positive control'])} for 80% power); "
        f"{checks['correction']}, alpha {checks['alpha']}.{_measured_text(checks)}",
        "",
        _positive_control_line(checks),
        f"- {checks['null controls equivalent']}: null controls {', '.join(checks['null controls'])} shown "
        f"equivalent (95% CI of Δ inside ±{checks['equivalence margin']}; not checkable below "
        f"{CHECKABLE_MIN} in the smaller class): "
        + "; ".join(f"{o} {v['verdict']} ({v['why']})" for o, v in checks["null control verdicts"].items()),
        "- agreement of the certain-label choice with the truth-based choice (held-out, sign of delta; "
        f"observations with an expected effect only, {', '.join(checks['observations with an expected effect'])}): "
        + _agreement_text(a),
        f"- truth-based sign vs the expected better policy (same observations): {_agreement_text(b)}",
        *_premise_lines(checks),
        "",
        markdown(table),
        "",
    ]
    path = output_dir / CHECK_MD
    path.write_text("\n".join(lines))
    return path


def _positive_control_line(checks: dict) -> str:
    """PASS / FAIL for the positive control, or NOT CHECKABLE when the phantom has none: no observation's
    modelled effect is large for every learner of the family (docs/statistics.md)."""
    if checks["positive control"] is None:
        return (
            "- NOT CHECKABLE: positive control — this phantom has none (no observation's modelled effect is large "
            "for every learner of the family), so a recovered effect cannot be checked here"
        )
    verdict = "PASS" if checks["positive control recovered"] else "FAIL"
    return f"- {verdict}: positive control {checks['positive control']} recovered as expected"


def _premise_lines(checks: dict) -> list[str]:
    apart = checks.get("premise violated (the runs tell faint from mimic)")
    unseen = checks.get("premise violated (the runs do not see faint signs)")
    if apart is None:
        return []
    if not apart and not unseen:
        return [
            "- premise of the expected answer (a learner that sees faint signs but cannot tell them from mimics): held"
        ]
    lines = []
    if apart:
        lines.append(
            "- premise of the expected answer (faint and mimic look alike to the learner) **violated** for "
            f"{', '.join(apart)}: these runs score mimics nearer to no sign than to faint signs (faint-mimic "
            f"share >= {TELLS_APART} in every arm), so the expected answer does not describe what they learned there"
        )
    if unseen:
        lines.append(
            f"- faint signs **not seen** by these runs (faint - none < {SEEN} logit in every arm) for "
            f"{', '.join(unseen)}: the expected answer assumes a learner that sees them"
        )
    return lines


def enforce(checks: dict, strict: bool) -> None:
    """With ``strict``, raise when the positive control was missed or a null control was not shown
    equivalent (not checkable included: a check that could not be made is no pass)."""
    if checks["positive control"] is None:
        failed = ["positive control (NOT CHECKABLE: this phantom has none)"]
    else:
        failed = [] if checks["positive control recovered"] else ["positive control recovered"]
    if checks["null controls equivalent"] != "PASS":
        failed.append(f"null controls equivalent ({checks['null controls equivalent']})")
    if strict and failed:
        raise AssertionError(f"phantom check failed: {', '.join(failed)} (see {CHECK_MD})")


def _measured_seed_sd(selected: pd.DataFrame, primary: str | None) -> dict | None:
    """Each arm's seed SD of the positive control's AUROC on the selection set (None without the columns)."""
    columns = {policy: f"{policy} seed SD" for policy in COMPARED_POLICIES}
    if primary is None or not set(columns.values()) <= set(selected.columns):
        return None
    return {policy: float(selected.loc[primary, column]) for policy, column in columns.items()}


def _measured_text(checks: dict) -> str:
    """The sizing's seed SD beside what the runs measured, and the smallest Δ those measurements can detect."""
    measured, planned = checks.get("positive control seed SD (measured)"), checks.get("planned seed SD")
    if not measured:
        return ""
    arms = " / ".join(f"{policy} {sd:.3f}" for policy, sd in measured.items())
    text = (
        f" The sizing assumed a seed SD of {planned:g}" if planned is not None else " The sizing's seed SD is not given"
    )
    text += f"; the runs measured {arms} for {checks['positive control']}"
    detectable = checks.get("positive control smallest detectable delta (measured seed SD)")
    if detectable is not None and np.isfinite(detectable):
        text += f", at which the smallest Δ detectable at 80% power is {detectable:.3f}"
    if planned is not None and max(measured.values()) > 1.5 * planned:
        text += " (the sizing's guess was too small: the study had less power than planned)"
    return text + "."


def _studies(needed) -> str:
    """The sizing's study count for the report; inf: no study count reaches the power with these seeds."""
    if needed is None:
        return "an unsized number"
    if not np.isfinite(needed):
        return "more than any study count gives with these seeds per policy (see the sizing)"
    return f"{int(needed):,}"
