"""Calibration: ECE and Brier by hand, bins as scikit-learn's, temperature/Platt recover known values,
scaling is refused on the set it was fitted on, and a run's calibration files."""

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from sklearn.calibration import calibration_curve

from chexutils.core.errors import DataError
from chexutils.core.labels import OBSERVATIONS
from chexutils.evaluation.calibration import (
    bin_table,
    brier_score,
    calibrate_run,
    calibration_table,
    expected_calibration_error,
    fit_platt,
    fit_scaling,
    fit_temperature,
    sweep_calibration,
    to_logits,
)
from chexutils.evaluation.evaluate import RunScores
from chexutils.scoring.aggregate import aggregate_studies


def synthetic_run(
    name: str, split: str, n_studies: int, seed: int, temperature: float = 1.0, first_patient: int = 1
) -> RunScores:
    """Two images per study; study truth drawn from a true logit z, image scores sigmoid(z * temperature + noise).

    temperature > 1 makes the run over-confident by that factor; a few labels are uncertain (-1).
    """
    rng = np.random.default_rng(seed)
    rows, probs = [], []
    for i in range(n_studies):
        patient, study = f"patient{first_patient + i // 2:05d}", f"study{1 + i % 2}"
        z = rng.normal(-0.5, 1.5, len(OBSERVATIONS))
        y = (rng.uniform(size=len(OBSERVATIONS)) < 1 / (1 + np.exp(-z))).astype(float)
        y[rng.uniform(size=len(OBSERVATIONS)) < 0.05] = -1.0
        for view in (1, 2):
            kind = "frontal" if view == 1 else "lateral"
            rows.append(
                {
                    "Path": f"CheXpert-v1.0-small/{split}/{patient}/{study}/view{view}_{kind}.jpg",
                    "patient": patient,
                    "study": f"{patient}/{study}",
                    "frontal": view == 1,
                    **dict(zip(OBSERVATIONS, y)),
                }
            )
            noisy = z * temperature + rng.normal(0, 0.05, len(OBSERVATIONS)) - (0.3 if view == 2 else 0.0)
            probs.append(1 / (1 + np.exp(-noisy)))
    frame = pd.DataFrame(rows)
    study_labels, study_scores = aggregate_studies(frame, np.array(probs))
    index = pd.Index(frame["Path"], name="Path")
    return RunScores(
        name,
        frame[list(OBSERVATIONS)].set_axis(index),
        pd.DataFrame(np.array(probs), index=index, columns=list(OBSERVATIONS)),
        study_labels,
        study_scores,
    )


def test_ece_and_brier_by_hand():
    y = np.array([0, 1, 1, 0, 1])
    p = np.array([0.05, 0.15, 0.12, 0.85, 0.95])
    # bins (0, .1]: gap .05 (1 study); (.1, .2]: mean .135, all positive, gap .865 (2); (.8, .9]: .85 (1); (.9, 1]: .05 (1)
    assert expected_calibration_error(y, p) == pytest.approx((0.05 + 2 * 0.865 + 0.85 + 0.05) / 5)
    assert brier_score(y, p) == pytest.approx((0.05**2 + 0.85**2 + 0.88**2 + 0.85**2 + 0.05**2) / 5)
    assert expected_calibration_error([0, 0, 0, 1], [0.25] * 4) == pytest.approx(0.0)  # 1 in 4 at 0.25: calibrated
    assert brier_score([0, 0, 0, 1], [0.25] * 4) == pytest.approx((3 * 0.25**2 + 0.75**2) / 4)
    # 0.1 sits on an edge and belongs to the first bin (apart from 0.15): (.9 + .15) / 2, not |.5 - .125|
    assert expected_calibration_error([1, 0], [0.1, 0.15]) == pytest.approx(0.525)
    assert math.isnan(expected_calibration_error([], [])) and math.isnan(brier_score([], []))


def test_bins_match_sklearn_calibration_curve_including_edges():
    rng = np.random.default_rng(4)
    p = np.r_[rng.uniform(size=300), np.linspace(0, 1, 11)]  # every bin edge included
    y = (rng.uniform(size=len(p)) < p).astype(int)
    bins = bin_table(y, p)
    assert bins["count"].sum() == len(p)
    fraction, mean = calibration_curve(y, p, n_bins=10, strategy="uniform")
    filled = bins[bins["count"] > 0]
    np.testing.assert_allclose(filled["fraction_positive"], fraction)
    np.testing.assert_allclose(filled["mean_predicted"], mean)


@pytest.mark.parametrize("true_temperature", [0.5, 2.5])
def test_temperature_scaling_recovers_a_known_temperature(true_temperature):
    rng = np.random.default_rng(0)
    z = rng.normal(0.0, 2.0, 20_000)
    y = (rng.uniform(size=z.size) < 1 / (1 + np.exp(-z))).astype(int)
    assert fit_temperature(z * true_temperature, y) == pytest.approx(true_temperature, rel=0.05)
    slope, intercept = fit_platt(z * true_temperature - 1.0, y)  # logit = (x + 1) / T
    assert slope == pytest.approx(1 / true_temperature, rel=0.05)
    assert intercept == pytest.approx(1 / true_temperature, abs=0.1)


def test_logits_invert_the_sigmoid_and_stay_finite():
    z = np.array([-3.0, 0.0, 2.0])
    np.testing.assert_allclose(to_logits(1 / (1 + np.exp(-z))), z)
    assert np.isfinite(to_logits([0.0, 1.0])).all()


def test_scaling_is_refused_on_its_own_set_and_keeps_study_max():
    valid = synthetic_run("r", "valid", 400, seed=1, temperature=3.0)
    held_out = synthetic_run("r", "train", 400, seed=2, temperature=3.0, first_patient=500)
    scaler = fit_scaling(valid, "official valid")
    assert scaler.parameters["temperature"].between(2.0, 4.5).all()  # over-confident by 3
    with pytest.raises(DataError, match=r"official valid.*expected a different set"):
        scaler.apply(valid, "official valid")
    mixed = synthetic_run("r", "valid", 4, seed=1)  # shares images with the fitting set
    with pytest.raises(DataError, match=r"held-out: 8 of its 8 images"):
        scaler.apply(mixed, "held-out")
    scaled = scaler.apply(held_out, "held-out")
    studies = scaled.image_scores.index.map(lambda p: "/".join(p.split("/")[2:4]))
    np.testing.assert_allclose(
        scaled.image_scores.groupby(studies).max().loc[scaled.study_scores.index], scaled.study_scores, rtol=1e-9
    )
    before = calibration_table(held_out.study_labels, held_out.study_scores)
    after = calibration_table(scaled.study_labels, scaled.study_scores)
    assert (after["ece"] < before["ece"]).sum() >= 12 and (after["brier"] < before["brier"]).sum() >= 12
    platt = fit_scaling(valid, "official valid", "platt")
    assert (platt.parameters["slope"] > 0).all() and platt.parameters["temperature"].isna().all()
    with pytest.raises(ValueError, match="unknown scaling method"):
        fit_scaling(valid, "official valid", "isotonic")


def test_one_class_is_left_unscaled_with_a_note():
    valid = synthetic_run("r", "valid", 60, seed=1)
    valid.study_labels["Fracture"] = 0.0
    scaler = fit_scaling(valid, "official valid")
    row = scaler.parameters.loc["Fracture"]
    assert row["slope"] == 1.0 and row["intercept"] == 0.0 and "one class" in row["note"]
    assert (scaler.parameters["note"] == "").sum() == len(OBSERVATIONS) - 1
    positive = valid.study_labels["Edema"] == 1
    valid.study_scores["Edema"] = 0.5 - 1e-3 * positive  # positives lower: no usable signal for a T > 0
    flat = fit_scaling(valid, "official valid").parameters.loc["Edema"]
    assert flat["temperature"] > 100 and "upper search bound" in flat["note"]
    valid.study_scores["Edema"] = 0.5 + 1e-3 * positive  # separated: T shrinks to the bound
    sharp = fit_scaling(valid, "official valid").parameters.loc["Edema"]
    assert sharp["temperature"] < 0.01 and "lower search bound" in sharp["note"]
    table = calibration_table(valid.study_labels, valid.study_scores)
    y = np.zeros(60)
    assert table.loc["Fracture", "ece"] == pytest.approx(expected_calibration_error(y, valid.study_scores["Fracture"]))


def test_calibrate_run_writes_its_files_and_the_sweep_summary(tmp_path):
    valid = synthetic_run("r", "valid", 200, seed=1, temperature=2.0)
    held_out = synthetic_run("r", "train", 200, seed=2, temperature=2.0, first_patient=500)
    run_dir = tmp_path / "U-Ones"
    wide, fig = calibrate_run(run_dir, valid, "official valid", held_out, "held-out")
    plt.close(fig)
    long = pd.read_csv(run_dir / "calibration.csv")
    assert len(long) == 3 * len(OBSERVATIONS)
    assert set(zip(long["set"], long["scaling"])) == {
        ("official valid", "none"),
        ("held-out", "none"),
        ("held-out", "temperature fitted on official valid"),
    }
    edema = long[(long["observation"] == "Edema") & (long["set"] == "held-out")].set_index("scaling")
    y, p = held_out.study_labels["Edema"], held_out.study_scores["Edema"]
    keep = y.fillna(0) != -1
    assert edema.loc["none", "ece"] == pytest.approx(expected_calibration_error(y.fillna(0)[keep], p[keep]), rel=1e-5)
    assert edema.loc["none", "n"] == keep.sum()
    assert list(wide.index) == list(OBSERVATIONS) and "temperature" in wide.columns
    # issue 19 item 12: the printed table says which labels each set is scored against
    held_out_column = (
        "held-out [report labels (blank = negative, uncertain left out)] | temperature fitted on official valid | ece"
    )
    assert held_out_column in wide.columns
    assert "official valid [radiologist labels (on the phantom: the truth)] | none | ece" in wide.columns
    assert "scored on held-out against report labels (blank = negative" in fig._suptitle.get_text()
    assert (run_dir / "reliability.png").stat().st_size > 10_000
    (run_dir / "metrics_official_valid.json").write_text(
        '{"observations": {'
        + ", ".join(f'"{o}": {{"auroc": {0.5 + i / 100}}}' for i, o in enumerate(OBSERVATIONS))
        + "}}"
    )
    runs = pd.DataFrame({"policy": ["U-Ones"], "path": [run_dir]}, index=pd.Index(["U-Ones"], name="run"))
    summary = sweep_calibration(runs, tmp_path / "calibration_comparison.csv")
    assert pd.read_csv(tmp_path / "calibration_comparison.csv", index_col=0).loc["U-Ones", "policy"] == "U-Ones"
    official = long[long["set"] == "official valid"].set_index("observation")
    tasks = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"]
    assert summary.loc["U-Ones", "mean ECE (5 tasks)"] == pytest.approx(official.loc[tasks, "ece"].mean())
    with pytest.raises(DataError, match="calibration.csv: file does not exist"):
        sweep_calibration(runs.assign(path=[tmp_path]))


def test_reliability_legends_sit_under_their_panels_outside_every_curve(tmp_path):
    # issue 22: a legend inside a panel covered the curves
    valid = synthetic_run("r", "valid", 120, seed=1, temperature=2.0)
    held_out = synthetic_run("r", "train", 120, seed=2, temperature=2.0, first_patient=500)
    _, fig = calibrate_run(tmp_path / "run", valid, "official valid", held_out, "held-out")
    try:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        panels = [ax for ax in fig.axes if ax.get_legend() is not None]
        assert len(panels) == len(OBSERVATIONS)
        boxes = [ax.get_window_extent(renderer) for ax in fig.axes if ax.axison]
        for ax in panels:
            legend = ax.get_legend().get_window_extent(renderer)
            assert not any(legend.overlaps(box) for box in boxes), ax.get_title()
            assert legend.y1 < ax.get_window_extent(renderer).y0  # under its own panel
    finally:
        plt.close(fig)
