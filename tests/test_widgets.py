"""The ROC browser: operating points by hand, the Path join, and widget changes driving state() and the HTML."""

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from chexutils.core.errors import DataError
from chexutils.core.labels import OBSERVATIONS
from chexutils.report.widgets import RocBrowser, load_run_scores, operating_point, roc_points

NAN = math.nan
# Four studies; s4 has one view. Study labels: Atelectasis 1 / 0 / uncertain / blank, Edema 0 / 1 / 1 / 0.
STUDIES = {
    "patient00001/study1": (1.0, 0.0),
    "patient00001/study2": (0.0, 1.0),
    "patient00002/study1": (-1.0, 1.0),
    "patient00003/study1": (NAN, 0.0),
}
VIEWS = [
    "patient00001/study1/view1",
    "patient00001/study1/view2",
    "patient00001/study2/view1",
    "patient00001/study2/view2",
    "patient00002/study1/view1",
    "patient00002/study1/view2",
    "patient00003/study1/view1",
]
# Per image, in VIEWS order: (Atelectasis, Edema) probabilities of run "a" and run "b".
SCORES = {
    "a": [(0.9, 0.3), (0.2, 0.2), (0.6, 0.7), (0.1, 0.5), (0.8, 0.45), (0.3, 0.6), (0.4, 0.1)],
    "b": [(0.35, 0.8), (0.55, 0.1), (0.25, 0.9), (0.65, 0.4), (0.5, 0.2), (0.05, 0.3), (0.75, 0.6)],
}


def _path(view: str) -> str:
    kind = "frontal" if view.endswith("1") else "lateral"
    return f"CheXpert-v1.0-small/valid/{view}_{kind}.jpg"


@pytest.fixture
def frame() -> pd.DataFrame:
    """The label frame, in the CSV order (Fracture all negative: one class only)."""
    rows = []
    for line, view in enumerate(VIEWS, start=2):
        patient, study, _ = view.split("/")
        atelectasis, edema = STUDIES[f"{patient}/{study}"]
        row = {
            "Path": _path(view),
            "patient": patient,
            "study": f"{patient}/{study}",
            "frontal": view.endswith("1"),
            "line": line,
        }
        row.update({obs: NAN for obs in OBSERVATIONS})
        row.update({"Atelectasis": atelectasis, "Edema": edema, "Fracture": 0.0})
        rows.append(row)
    return pd.DataFrame(rows)


def write_run(folder, frame, name, seed, extra_path=None):
    """Write predictions_valid.csv for run ``name`` with its rows shuffled; returns the run folder."""
    table = frame[["Path", "patient", "study", "frontal"]].copy()
    rng = np.random.default_rng(seed)
    for obs in OBSERVATIONS:
        table[obs] = rng.uniform(size=len(table)).round(3)
    table[["Atelectasis", "Edema"]] = np.array(SCORES[name])
    if extra_path:
        table.loc[len(table)] = [extra_path, "patient09999", "patient09999/study1", True] + [0.5] * len(OBSERVATIONS)
    run_dir = folder / f"run_{name}"
    run_dir.mkdir()
    table.sample(frac=1.0, random_state=seed).to_csv(run_dir / "predictions_valid.csv", index=False)
    return run_dir


@pytest.fixture
def runs(tmp_path, frame):
    return [
        load_run_scores(write_run(tmp_path, frame, name, seed), frame, name=name) for name, seed in (("a", 1), ("b", 2))
    ]


def expected(name, observation, level, threshold):
    """operating_point on arrays built here from the hand-made tables (study level = max over views)."""
    column = {"Atelectasis": 0, "Edema": 1}[observation]
    studies = ["/".join(v.split("/")[:2]) for v in VIEWS]
    scores = pd.Series([s[column] for s in SCORES[name]])
    labels = pd.Series([STUDIES[s][column] for s in studies])
    if level == "study":
        scores, labels = scores.groupby(studies).max(), labels.groupby(studies).first()
    y = labels.fillna(0.0)
    keep = y != -1.0
    return operating_point(y[keep].to_numpy(), scores[keep].to_numpy(), threshold)


def counts(row) -> tuple:
    return tuple(int(row[k]) for k in ("tp", "fp", "tn", "fn"))


def body_rows(html: str) -> int:
    return html.split("<tbody>")[1].count("<tr>") if "<tbody>" in html else 0


def test_operating_point_by_hand():
    y = np.array([1, 1, 0, 0, 0, 1])
    s = np.array([0.9, 0.4, 0.6, 0.2, 0.4, 0.7])
    op = operating_point(y, s, 0.5)
    assert (op["tp"], op["fp"], op["tn"], op["fn"]) == (2, 1, 2, 1)
    assert op["sensitivity"] == pytest.approx(2 / 3) and op["specificity"] == pytest.approx(2 / 3)
    assert op["ppv"] == pytest.approx(2 / 3) and op["npv"] == pytest.approx(2 / 3)
    tie = operating_point(y, s, 0.4)  # score == threshold counts as positive
    assert (tie["tp"], tie["fp"], tie["tn"], tie["fn"]) == (3, 2, 1, 0)
    assert tie["npv"] == 1.0
    everything = operating_point(y, s, 0.0)
    assert (everything["tp"], everything["fp"], everything["tn"], everything["fn"]) == (3, 3, 0, 0)
    assert everything["sensitivity"] == 1.0 and everything["specificity"] == 0.0 and math.isnan(everything["npv"])
    nothing = operating_point(y, s, 0.95)
    assert (nothing["tp"], nothing["fp"], nothing["tn"], nothing["fn"]) == (0, 0, 3, 3)
    assert math.isnan(nothing["ppv"]) and nothing["sensitivity"] == 0.0 and nothing["threshold"] == 0.95


def test_roc_points_and_one_class():
    points = roc_points(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
    assert list(points.columns[:3]) == ["fpr", "tpr", "thresholds"]
    assert points["auroc"].iloc[0] == pytest.approx(0.75)
    assert math.isnan(roc_points(np.array([0, 0]), np.array([0.1, 0.2])).attrs["auroc"])


def test_load_joins_by_path(runs, frame):
    a = runs[0]
    assert a.image_scores.loc[_path(VIEWS[0]), "Atelectasis"] == 0.9
    assert a.image_labels.loc[_path(VIEWS[2]), "Edema"] == 1.0
    assert a.study_scores.loc["patient00001/study1", "Atelectasis"] == 0.9  # max over the two views
    assert a.study_labels.loc["patient00002/study1", "Atelectasis"] == -1.0
    assert len(a.study_labels) == 4


def test_missing_path_is_data_error(tmp_path, frame):
    run_dir = write_run(
        tmp_path, frame, "a", 1, extra_path="CheXpert-v1.0-small/valid/patient09999/study1/view1_frontal.jpg"
    )
    with pytest.raises(DataError, match=r"predictions_valid\.csv: 1 Path.*patient09999"):
        load_run_scores(run_dir, frame)


def test_threshold_drives_state(runs):
    browser = RocBrowser(runs)
    browser.observation_select.value = "Atelectasis"
    browser.level_toggle.value = "image"
    for threshold in (0.0, 0.5, 0.7, 1.0):
        browser.threshold_slider.value = threshold
        state = browser.state()
        for name in ("a", "b"):
            want = expected(name, "Atelectasis", "image", threshold)
            got = state.loc[name]
            assert counts(got) == (want["tp"], want["fp"], want["tn"], want["fn"])
            for key in ("sensitivity", "specificity", "ppv", "npv"):
                assert got[key] == pytest.approx(want[key], nan_ok=True)
    browser.threshold_slider.value = 0.5
    assert counts(browser.state().loc["a"]) == (1, 1, 2, 1)  # by hand, from SCORES and STUDIES
    browser.threshold_slider.value = 0.7
    assert counts(browser.state().loc["a"]) == (1, 0, 3, 1)


def test_observation_and_level_change_counts(runs):
    browser = RocBrowser(runs)
    browser.observation_select.value = "Atelectasis"
    browser.level_toggle.value = "study"
    browser.threshold_slider.value = 0.5  # observation and level changes reset it to the rule's, so set it after
    assert counts(browser.state().loc["a"]) == (1, 1, 1, 0)  # studies s1 0.9 / s2 0.6 / s4 0.4
    browser.observation_select.value = "Edema"
    browser.threshold_slider.value = 0.5
    assert counts(browser.state().loc["a"]) == (2, 0, 2, 0)
    browser.level_toggle.value = "image"
    browser.threshold_slider.value = 0.5
    assert counts(browser.state().loc["a"]) == (3, 0, 3, 1)
    for level in ("image", "study"):
        browser.level_toggle.value = level
        browser.threshold_slider.value = 0.5
        want = expected("b", "Edema", level, 0.5)
        assert counts(browser.state().loc["b"]) == (want["tp"], want["fp"], want["tn"], want["fn"])
        assert browser.state().loc["b", "n"] == (7 if level == "image" else 4)


def test_run_selection_and_html(runs):
    browser = RocBrowser(runs)
    browser.observation_select.value = "Edema"
    browser.level_toggle.value = "image"
    browser.threshold_slider.value = 0.45
    assert list(browser.state().index) == ["a", "b"] and body_rows(browser.table.value) == 2
    browser.runs_select.value = ("b",)
    state = browser.state()
    assert list(state.index) == ["b"] and body_rows(browser.table.value) == 1
    html = browser.table.value
    for key in ("tp", "fp", "tn", "fn", "n", "positives", "negatives"):
        assert f"<td>{int(state.loc['b', key])}</td>" in html
    for key in ("sensitivity", "specificity", "ppv", "npv", "auroc"):
        assert f"<td>{state.loc['b', key]:.3f}</td>" in html
    browser.runs_select.value = ()
    assert browser.state().empty and body_rows(browser.table.value) == 0


def test_one_class_plot_and_no_figure_leak(runs):
    before = set(plt.get_fignums())
    browser = RocBrowser(runs)
    browser.observation_select.value = "Fracture"  # all negative: AUROC undefined, not a crash
    state = browser.state()
    assert state["auroc"].isna().all() and state["note"].str.contains("one class").all()
    assert "one class" in browser.table.value
    browser.observation_select.value = "Edema"
    assert browser.state()["auroc"].notna().all()
    (shown,) = browser.output.outputs
    assert shown["data"]["image/png"] and "Edema" in shown["data"]["text/plain"]
    assert set(plt.get_fignums()) == before
    assert browser.display() is browser.box


# ----------------------------------------------------------------------------------------------
# Study level by default, the rule's threshold, calibration beside the ROC, the gallery, the static picture


def write_images(root, frame) -> None:
    """A small grayscale JPEG for every Path of the frame, each a different shade."""
    from PIL import Image

    for i, path in enumerate(frame["Path"]):
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((20, 16), 30 * i, dtype=np.uint8), mode="L").save(target)


def study_level(name, observation):
    """(study labels, study scores) of run ``name`` by hand (max over views), certain labels only."""
    column = {"Atelectasis": 0, "Edema": 1}[observation]
    studies = ["/".join(v.split("/")[:2]) for v in VIEWS]
    scores = pd.Series([s[column] for s in SCORES[name]]).groupby(studies).max()
    labels = pd.Series([STUDIES[s][column] for s in studies]).groupby(studies).first().fillna(0.0)
    return labels[labels != -1.0], scores[labels != -1.0]


def test_starts_at_study_level_with_the_rules_threshold(runs):
    from chexutils.evaluation.operating_points import choose_threshold

    browser = RocBrowser(runs)
    assert browser.level_toggle.value == "study"
    browser.observation_select.value = "Edema"  # resets the threshold to Youden's for run a at study level
    y, s = study_level("a", "Edema")
    want, _ = choose_threshold(y.to_numpy(), s.to_numpy(), "youden")
    assert browser.threshold_slider.value == pytest.approx(want) and want != 0.5
    assert "Youden" in browser.caption.value and "a, Edema, study level" in browser.caption.value
    browser.threshold_slider.value = 0.2
    browser.rule_button.click()
    assert browser.threshold_slider.value == pytest.approx(want)
    assert set(browser.state()[["ece", "brier"]].columns) == {"ece", "brier"}
    assert browser.state().loc["a", "brier"] == pytest.approx(float(((s - y) ** 2).mean()))
    browser.observation_select.value = "Fracture"  # one class: no threshold by the rule, the caption says why
    assert "not set" in browser.caption.value and "one class" in browser.caption.value
    with pytest.raises(ValueError, match="unknown operating-point rule"):
        RocBrowser(runs, rule="accuracy")


def test_gallery_cases_by_hand(runs):
    from chexutils.explain.gallery import gallery_cases

    cases = gallery_cases(runs[0], "Atelectasis", "study", 0.5, k=4)  # studies s1 0.9 (+), s2 0.6 (-), s4 0.4 (-)
    assert list(zip(cases["kind"], cases["key"])) == [
        ("true positive", "patient00001/study1"),
        ("false positive", "patient00001/study2"),
    ]
    assert list(cases["path"]) == [_path(VIEWS[0]), _path(VIEWS[2])]  # the view that set the study's max
    missed = gallery_cases(runs[0], "Atelectasis", "study", 0.95, k=4)
    assert list(zip(missed["kind"], missed["key"])) == [("false negative", "patient00001/study1")]
    images = gallery_cases(runs[1], "Edema", "image", 0.25, k=2)  # b: positive images .9 .4 .2 .3, negatives .8 .1 .6
    assert list(images["kind"]) == [
        "true positive",
        "true positive",
        "false positive",
        "false positive",
        "false negative",
    ]
    assert list(images["score"]) == [0.9, 0.4, 0.8, 0.6, 0.2]
    assert images["path"].equals(images["key"])


def test_gallery_and_plot_follow_the_controls_and_use_the_overlay(tmp_path, runs, frame):
    write_images(tmp_path, frame)
    calls = []

    def overlay(paths, observation):
        calls.append(([str(p) for p in paths], observation))
        return [np.full((8, 8, 3), 200, np.uint8) for _ in paths]

    browser = RocBrowser(runs, image_root=tmp_path, overlay=overlay)
    browser.observation_select.value = "Atelectasis"
    browser.threshold_slider.value = 0.5
    (shown,) = browser.gallery.outputs
    first_gallery, first_plot = shown["data"]["image/png"], browser.output.outputs[0]["data"]["image/png"]
    paths, observation = calls[-1]
    assert observation == "Atelectasis" and paths == [str(tmp_path / _path(VIEWS[0])), str(tmp_path / _path(VIEWS[2]))]
    browser.threshold_slider.value = 0.95
    assert calls[-1][0] == [str(tmp_path / _path(VIEWS[0]))]
    assert browser.gallery.outputs[0]["data"]["image/png"] != first_gallery
    assert browser.output.outputs[0]["data"]["image/png"] != first_plot
    browser.runs_select.value = ("b",)  # the gallery shows the first selected run: b's study 1 scores max(.35, .55)
    assert list(zip(browser.cases()["kind"], browser.cases()["score"])) == [("false negative", 0.55)]
    assert calls[-1][0] == [str(tmp_path / _path(VIEWS[1]))]
    bad = RocBrowser(runs, image_root=tmp_path)  # default: grayscale pictures of the files
    assert bad.gallery.outputs[0]["data"]["image/png"]
    with pytest.raises(ValueError, match="expected HxWx3 uint8"):
        RocBrowser(runs, image_root=tmp_path, overlay=lambda paths, obs: [np.zeros((4, 4))] * len(paths))
    no_root = RocBrowser(runs)
    assert "no image_root" in no_root.gallery.outputs[0]["data"]["text/plain"]


def test_static_picture_is_displayed_beside_the_widget(runs, monkeypatch):
    import IPython.display

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda obj: shown.append(obj))
    browser = RocBrowser(runs)
    browser._ipython_display_()
    assert shown[0] is browser.box
    pictures = [o for o in shown if isinstance(o, IPython.display.Image)]
    assert len(pictures) == 1 and pictures[0].data[:8] == b"\x89PNG\r\n\x1a\n"
    import io

    from PIL import Image

    assert Image.open(io.BytesIO(pictures[0].data)).width >= 600


def test_from_runs_overlays_a_sweep(tmp_path, frame):
    folders = [write_run(tmp_path, frame, name, seed) for name, seed in (("a", 1), ("b", 2))]
    browser = RocBrowser.from_runs(folders, frame, "official_valid")
    assert list(browser.runs) == ["run_a", "run_b"] and list(browser.state().index) == ["run_a", "run_b"]


def test_gallery_counts_every_case_of_each_kind(runs):
    from chexutils.explain.gallery import gallery_cases

    cases = gallery_cases(runs[1], "Edema", "image", 0.25, k=1)  # b: 3 positive images >= .25, 2 negatives, 1 miss
    assert list(cases["kind"]) == ["true positive", "false positive", "false negative"]
    assert cases.attrs["totals"] == {"true positive": 3, "false positive": 2, "false negative": 1}


# ----------------------------------------------------------------------------------------------
# Readable at a glance (issue 22): short gallery titles, a caption that follows a typed threshold,
# legends outside the curves


def test_gallery_titles_name_patient_study_view_and_fit_their_image(runs):
    from chexutils.explain.gallery import gallery_cases, gallery_figure, short_title

    assert short_title(_path(VIEWS[1])) == "p00001 s1 view2_lateral"
    assert short_title("patient00002/study1") == "p00002 s1"
    cases = gallery_cases(runs[1], "Edema", "image", 0.25, k=2)  # image level: the keys are full Paths
    images = [np.zeros((20, 16, 3), np.uint8)] * len(cases)
    fig = gallery_figure(cases, images, 2, "b: Edema")
    try:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        titled = [ax for ax in fig.axes if ax.get_title()]
        assert len(titled) == len(cases)
        for ax in titled:
            assert ax.get_title().splitlines()[0] in {short_title(p) for p in cases["path"]}
            title, image = ax.title.get_window_extent(renderer), ax.get_window_extent(renderer)
            assert title.width <= image.width, ax.get_title()  # so neighbouring titles never run into each other
    finally:
        plt.close(fig)


def test_the_caption_follows_a_typed_threshold_and_returns_with_the_rule(runs):
    browser = RocBrowser(runs)
    browser.observation_select.value = "Edema"
    rule = browser.threshold_slider.value
    assert browser.caption.value.startswith(f"Threshold set to {rule:.3f} by Youden")
    browser.threshold_slider.value = 0.3  # typed into the slider's box
    assert browser.caption.value.startswith("Threshold 0.300, set by hand (score >= 0.300 is positive")
    assert f"youden gives {rule:.3f}" in browser.caption.value and "Threshold set to" not in browser.caption.value
    browser.rule_button.click()
    assert browser.caption.value.startswith(f"Threshold set to {rule:.3f} by Youden")
    browser.observation_select.value = "Fracture"  # no rule threshold: the reason, until a value is typed
    assert "not set" in browser.caption.value
    browser.threshold_slider.value = 0.7
    assert (
        browser.caption.value.startswith("Threshold 0.700, set by hand")
        and "no rule threshold" in browser.caption.value
    )


def test_the_roc_and_calibration_legends_sit_outside_the_curves(runs):
    browser = RocBrowser(runs)
    view, _ = browser.figures()
    try:
        view.canvas.draw()
        renderer = view.canvas.get_renderer()
        assert len(view.axes) == 2  # ROC and reliability
        for ax in view.axes:
            legend = ax.get_legend()
            assert legend is not None and len(legend.get_texts()) >= 2
            assert not legend.get_window_extent(renderer).overlaps(ax.get_window_extent(renderer)), ax.get_title()
    finally:
        plt.close(view)
