"""Mutation check: does each listed one-line bug make the tests named for it fail?

Not part of ``make test`` (it takes minutes). For every mutant: copy the repository (no .git, .venv
or caches) to a temporary folder, replace the mutant's exact original text, which must occur
exactly once in its file (else the mutant is refused: the code moved, update the list), run its
test files there with pytest (-x -q, PYTHONPATH set to the copy), and print 'caught' (the tests
failed) or 'MISSED' (they passed), then a summary. The exit status is 1 if any mutant was missed
or refused.

    nice python benchmarks/mutants.py              # all mutants
    python benchmarks/mutants.py --list            # names only
    python benchmarks/mutants.py --only delong     # the mutants whose name contains 'delong'
    python benchmarks/mutants.py --baseline        # first check the listed tests pass unmutated
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIP = shutil.ignore_patterns(".git", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache", "*.egg-info", ".whl")


@dataclass(frozen=True)
class Mutant:
    name: str
    file: str  # relative to the repository root
    original: str  # exact text, found exactly once in ``file``
    replacement: str
    tests: tuple[str, ...]  # pytest arguments: test files or node ids


MUTANTS = (
    # --- the statistical core
    Mutant(
        "stats.delong_cov: clustered covariance without its cross term",
        "chexutils/scoring/stats.py",
        "return auc, s10 / m + s01 / n + (s11 + s11.T) / (m * n)",
        "return auc, s10 / m + s01 / n",
        ("tests/test_reference_values.py",),
    ),
    Mutant(
        "stats.hierarchical_deltas: resampled seeds ignored",
        "chexutils/scoring/stats.py",
        "return auc_b[rows, pick_b].mean(axis=1) - auc_a[rows, pick_a].mean(axis=1)",
        "return auc_b.mean(axis=1) - auc_a.mean(axis=1)",
        ("tests/test_reference_values.py",),
    ),
    Mutant(
        "stats.seed_arm_test: seed variance not divided by the arms' seed counts",
        "chexutils/scoring/stats.py",
        "var_seed = pooled * (1 / k_a + 1 / k_b)",
        "var_seed = pooled",
        ("tests/test_reference_values.py",),
    ),
    Mutant(
        "stats.holm: no monotone step (already caught before issue 26)",
        "chexutils/scoring/stats.py",
        "out[order] = np.maximum.accumulate(stepped)",
        "out[order] = stepped",
        ("tests/test_stats.py::test_holm_hand_computed_case",),
    ),
    # --- the per-label policy choice
    Mutant(
        "policy_choice.choose: eligibility floor < min_positives -> <=",
        "chexutils/evaluation/policy_choice.py",
        "if smaller[obs] < min_positives:",
        "if smaller[obs] <= min_positives:",
        ("tests/test_decision_rules.py",),
    ),
    Mutant(
        "policy_choice.choose: verdict from the unadjusted p, not Holm's",
        "chexutils/evaluation/policy_choice.py",
        'elif table.loc[obs, "p_holm"] < alpha:',
        'elif table.loc[obs, "p_value"] < alpha:',
        ("tests/test_decision_rules.py",),
    ),
    Mutant(
        "policy_choice.below_floor: < CI_MIN_POSITIVES -> <=",
        "chexutils/evaluation/policy_choice.py",
        'return np.minimum(table["positives"], table["negatives"]) < CI_MIN_POSITIVES',
        'return np.minimum(table["positives"], table["negatives"]) <= CI_MIN_POSITIVES',
        ("tests/test_decision_rules.py",),
    ),
    Mutant(
        "policy_sweep.choose_policies: U-Ones passed as U-Zeros",
        "chexutils/evaluation/policy_sweep.py",
        's["arms"]["U-Zeros"],',
        's["arms"]["U-Ones"],',
        ("tests/test_decision_rules.py",),
    ),
    Mutant(
        "policy_sweep.selection_sets: patient groups dropped",
        "chexutils/evaluation/policy_sweep.py",
        '"groups": frame.drop_duplicates("study").set_index("study")["patient"],',
        '"groups": None,',
        ("tests/test_decision_rules.py",),
    ),
    Mutant(
        "phantom_check.agreement: counted where only the first criterion is defined",
        "chexutils/evaluation/phantom_check.py",
        'both = first.index[(first != "undefined") & (second.reindex(first.index) != "undefined")]',
        'both = first.index[first != "undefined"]',
        ("tests/test_decision_rules.py",),
    ),
    Mutant(
        "metrics.shown: CI floor >= CI_MIN_POSITIVES -> > (already caught before issue 26)",
        "chexutils/scoring/metrics.py",
        "and smaller >= CI_MIN_POSITIVES else few",
        "and smaller > CI_MIN_POSITIVES else few",
        ("tests/test_metrics.py",),
    ),
    Mutant(
        "metrics.shown: the clustered CI floor counts studies, not patients (issue 19 item 3)",
        "chexutils/scoring/metrics.py",
        '"with CI" if units >= CI_MIN_POSITIVES and',
        '"with CI" if smaller >= CI_MIN_POSITIVES and',
        ("tests/test_metrics.py::test_printed_clustered_interval_covers_and_counts_patients_at_the_floor",),
    ),
    Mutant(
        "stats.auroc_interval: clustered t with the studies' df (issue 19 item 3)",
        "chexutils/scoring/stats.py",
        "df = min(*cluster_counts(y, groups)) - 1",
        "df = min(m, n) - 1",
        ("tests/test_metrics.py::test_printed_clustered_interval_covers_and_counts_patients_at_the_floor",),
    ),
    Mutant(
        "metrics.shown: point floor >= POINT_MIN_POSITIVES -> >",
        "chexutils/scoring/metrics.py",
        "if smaller < POINT_MIN_POSITIVES:",
        "if smaller <= POINT_MIN_POSITIVES:",
        ("tests/test_decision_rules.py",),
    ),
    Mutant(
        "phantom_check.null_verdict: any CI passes as equivalent (issue 19 item 9)",
        "chexutils/evaluation/phantom_check.py",
        "inside = -margin <= low and high <= margin",
        "inside = True",
        ("tests/test_phantom_check.py",),
    ),
    Mutant(
        "phantom_check.null_verdict: a control below the floor is checked anyway (issue 19 item 9)",
        "chexutils/evaluation/phantom_check.py",
        "    if smaller < floor:",
        "    if smaller < 0:",
        ("tests/test_phantom_check.py",),
    ),
    # --- phantom expectations, power, readers, calibration
    Mutant(
        "phantom/expected.controls: primary positive control by the largest, not smallest, effect",
        "chexutils/phantom/expected.py",
        "return min(abs(d) for d in e.deltas.values()) * np.sqrt(p * (1 - p))",
        "return max(abs(d) for d in e.deltas.values()) * np.sqrt(p * (1 - p))",
        ("tests/test_decision_rules.py",),
    ),
    Mutant(
        "phantom/expected.LEARNERS: the probability-scale learners only (no logit noise)",
        "chexutils/phantom/expected.py",
        'LEARNERS = tuple(Learner("probability", t) for t in NOISE_SDS) + tuple(Learner("logit", t) for t in LOGIT_NOISE_SDS)',
        'LEARNERS = tuple(Learner("probability", t) for t in NOISE_SDS)',
        ("tests/test_phantom_expected.py",),
    ),
    Mutant(
        "phantom/label_model.sample_truth: a parent resting on faint children recorded clear",
        "chexutils/phantom/label_model.py",
        "cats[parent][gained[parent]] = np.where(child_clear[gained[parent]], CLEAR, FAINT)",
        "cats[parent][gained[parent]] = CLEAR",
        ("tests/test_phantom_labels.py",),
    ),
    Mutant(
        "phantom/label_model.sample_reports: No Finding kept beside a reported pathology",
        "chexutils/phantom/label_model.py",
        "no_finding[reported_finding(out)] = np.nan",
        "no_finding[reported_finding(out) & False] = np.nan",
        ("tests/test_phantom_labels.py",),
    ),
    Mutant(
        "power.paired_delta_sd: correlated noise mixed without square roots",
        "chexutils/evaluation/power.py",
        "noise = np.sqrt(correlation) * shared + np.sqrt(1 - correlation) * own",
        "noise = correlation * shared + (1 - correlation) * own",
        ("tests/test_decision_rules.py",),
    ),
    Mutant(
        "readers.score_readers: spec_delta against the reader's sensitivity",
        "chexutils/evaluation/readers.py",
        'row["spec_delta"] = row["model_spec_at_reader_sens"] - row["specificity"]',
        'row["spec_delta"] = row["model_spec_at_reader_sens"] - row["sensitivity"]',
        ("tests/test_decision_rules.py",),
    ),
    Mutant(
        "calibration.check_disjoint: refused only when every image is shared",
        "chexutils/evaluation/calibration.py",
        "    if len(shared):\n        raise DataError(",
        "    if len(shared) == len(run.image_labels):\n        raise DataError(",
        ("tests/test_decision_rules.py",),
    ),
    Mutant(
        "calibration.expected_calibration_error: bins not weighted by count (already caught before issue 26)",
        "chexutils/evaluation/calibration.py",
        'return float((filled["count"] * gaps).sum() / filled["count"].sum())',
        "return float(gaps.mean())",
        ("tests/test_calibration.py::test_ece_and_brier_by_hand",),
    ),
    # --- running things: cache, sweeps, workbook, Grad-CAM, training
    Mutant(
        "cache.file_stamps: key without the mtime",
        "chexutils/data/cache.py",
        "stamps[i] = (st.st_size, st.st_mtime_ns)",
        "stamps[i] = (st.st_size, 0)",
        ("tests/test_run_safeguards.py",),
    ),
    Mutant(
        "parallel.run_chain: goes on after a failed step",
        "chexutils/workbook/parallel.py",
        'if outcome.status == "failed":\n            break',
        'if outcome.status == "failed":\n            pass',
        ("tests/test_run_safeguards.py",),
    ),
    Mutant(
        "runner.execute_step: skipped on its marker although the executed notebook is gone",
        "chexutils/workbook/runner.py",
        "previous = read_marker(marker) if output.is_file() else {}",
        "previous = read_marker(marker)",
        ("tests/test_run_safeguards.py",),
    ),
    Mutant(
        "heatmaps.CAM_LAYERS: xrv-densenet121 hooked at denseblock4, not norm5",
        "chexutils/explain/heatmaps.py",
        '"xrv-densenet121": "features.trunk.norm5"',
        '"xrv-densenet121": "features.trunk.denseblock4"',
        ("tests/test_run_safeguards.py::test_cam_layer_output_is_the_trunks_final_output",),
    ),
    Mutant(
        "train._check_loss: only NaN stops training (an infinite loss goes on)",
        "chexutils/training/train.py",
        "if not math.isfinite(value):",
        "if math.isnan(value):",
        ("tests/test_run_safeguards.py::test_an_infinite_or_nan_loss_stops_training",),
    ),
    # --- the demo's headline figures against their recorded spread
    Mutant(
        "headline.prediction_interval: the mean's interval (no new-run term), not a prediction interval",
        "chexutils/workbook/headline.py",
        "math.sqrt(1 + 1 / len(x))",
        "math.sqrt(1 / len(x))",
        ("tests/test_headline.py::test_printed_verdicts_cover_one_more_run_95_percent_of_the_time",),
    ),
    Mutant(
        "headline.prediction_interval: normal quantile instead of Student's t",
        "chexutils/workbook/headline.py",
        "stats.t.ppf(1 - (1 - level) / 2, len(x) - 1)",
        "stats.norm.ppf(1 - (1 - level) / 2)",
        ("tests/test_headline.py::test_interval_half_width_matches_a_monte_carlo_of_the_pivot",),
    ),
)


# pytest's exit status: 1 tests failed, 2 collection failed (e.g. the mutant broke an import), 0 all
# passed; anything else (4 usage error, 5 nothing collected, a timeout) says nothing about the mutant
VERDICTS = {0: "MISSED", 1: "caught", 2: "caught"}


def apply(text: str, mutant: Mutant) -> str:
    """The mutated file text; a ValueError unless the original occurs exactly once."""
    found = text.count(mutant.original)
    if found != 1:
        raise ValueError(f"original text found {found} times in {mutant.file} (expected exactly once)")
    return text.replace(mutant.original, mutant.replacement)


def pytest_run(copy: Path, tests, timeout: float) -> tuple[int, str]:
    """(pytest's exit status, its last output line) for ``tests`` run in ``copy``."""
    env = {**os.environ, "PYTHONPATH": str(copy), "PYTHONDONTWRITEBYTECODE": "1"}
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    try:
        done = subprocess.run(command, cwd=copy, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return -1, f"timed out after {timeout:.0f} s"
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    return done.returncode, lines[-1] if lines else ""


def check_imports_copy(copy: Path) -> None:
    """Stop unless ``import chexutils`` in the copy finds the copy (not an installed or editable package)."""
    env = {**os.environ, "PYTHONPATH": str(copy)}
    where = subprocess.run(
        [sys.executable, "-c", "import chexutils; print(chexutils.__file__)"],
        cwd=copy,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not Path(where).resolve().is_relative_to(copy.resolve()):
        sys.exit(f"chexutils imports from {where}, not from the copy {copy}; a mutant there would not be tested")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="run only the mutants whose name contains this text")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--baseline", action="store_true", help="first run each mutant's tests unmutated")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per pytest run")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTANTS if args.only.lower() in m.name.lower()]
    if args.list:
        for m in chosen:
            print(f"{m.name}  [{m.file}; {' '.join(m.tests)}]")
        return 0
    results = []
    with tempfile.TemporaryDirectory(prefix="chexutils-mutants-") as tmp:
        for number, mutant in enumerate(chosen, 1):
            source = ROOT / mutant.file
            try:
                mutated = apply(source.read_text(), mutant)
            except (OSError, ValueError) as err:
                print(f"[{number}/{len(chosen)}] REFUSED  {mutant.name}: {err}", flush=True)
                results.append((mutant, "REFUSED"))
                continue
            copy = Path(tmp) / f"m{number}"
            shutil.copytree(ROOT, copy, ignore=SKIP, symlinks=True)
            if number == 1 or not results:
                check_imports_copy(copy)
            if args.baseline:
                code, last = pytest_run(copy, mutant.tests, args.timeout)
                if code != 0:
                    print(f"[{number}/{len(chosen)}] BASELINE FAILS  {mutant.name}: {last}", flush=True)
                    results.append((mutant, "BASELINE FAILS"))
                    shutil.rmtree(copy)
                    continue
            (copy / mutant.file).write_text(mutated)
            start = time.perf_counter()
            code, last = pytest_run(copy, mutant.tests, args.timeout)
            verdict = VERDICTS.get(code, f"ERROR (pytest exit {code})" if code >= 0 else "TIMEOUT")
            print(
                f"[{number}/{len(chosen)}] {verdict:6}  {mutant.name} ({time.perf_counter() - start:.0f} s; {last})",
                flush=True,
            )
            results.append((mutant, verdict))
            shutil.rmtree(copy)
    counts = {}
    for _, verdict in results:
        counts[verdict] = counts.get(verdict, 0) + 1
    caught = counts.pop("caught", 0)
    print(f"\n{caught} of {len(results)} mutants caught", end="")
    print("".join(f", {n} {v}" for v, n in counts.items()), end="")
    print(":" if caught < len(results) else ".")
    for mutant, verdict in results:
        if verdict != "caught":
            print(f"  {verdict}: {mutant.name}")
    return 0 if caught == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
