"""The generated phantom folder: layout, schema, sidecar truth, determinism, reuse, safety."""

import json

import numpy as np
import pandas as pd
import pytest
from conftest import TINY_PHANTOM

from chexutils.cli.phantom import main as phantom_cli
from chexutils.core.errors import DataError
from chexutils.core.labels import HIERARCHY, OBSERVATIONS, PATHOLOGIES
from chexutils.core.paths import PROJECT_ROOT
from chexutils.data.chexpert import read_chexpert, read_image
from chexutils.phantom import TRUTH_CSV, TRUTH_JSON, read_truth
from chexutils.phantom import expected as ex
from chexutils.phantom import measured_noise as mn
from chexutils.phantom.generate import generate_phantom


def test_layout_and_schema_like_the_real_release(tiny_phantom):
    train = read_chexpert(tiny_phantom / "train.csv")
    valid = read_chexpert(tiny_phantom / "valid.csv")
    assert tiny_phantom.name == "CheXpert-v1.0-small"
    assert set(train["folder"]) == {"train"} and set(valid["folder"]) == {"valid"}
    assert train["patient"].nunique() == TINY_PHANTOM["patients"]
    assert valid["patient"].nunique() == TINY_PHANTOM["valid_patients"]
    assert max(train["patient"]) < min(valid["patient"])  # valid patients numbered after train
    assert valid.groupby("patient")["study"].nunique().max() == 1
    assert set(np.unique(valid[list(OBSERVATIONS)].to_numpy())) <= {0.0, 1.0}
    assert (train[list(OBSERVATIONS)] == -1.0).to_numpy().any()
    assert train["frontal"].mean() > 0.7 and (~train["frontal"]).any()
    assert set(train.loc[train["frontal"], "AP/PA"]) <= {"AP", "PA"}
    pixels = read_image(train["image"].iloc[0])
    assert pixels.shape == (TINY_PHANTOM["size"][1], TINY_PHANTOM["size"][0])
    # all views of a study carry the study's labels
    assert (train.groupby("study")[list(OBSERVATIONS)].nunique(dropna=False) == 1).all().all()


def test_sidecar_truth_matches_valid_labels_and_explains_uncertain(tiny_phantom):
    meta = json.loads((tiny_phantom / TRUTH_JSON).read_text())
    assert meta["params"]["seed"] == TINY_PHANTOM["seed"]
    # collapse under U-Zeros on the probability scale, barely seen by the sharp logit learner (expected.py)
    assert meta["expected_better_policy"]["Atelectasis"] == "learner-dependent"
    assert meta["primary_positive_control"] is None and "No Finding" in meta["null_controls"]
    assert meta["label_noise"] == meta["params"]["label_noise"] == "hand-set" and meta["sidecar_version"] == 4
    truth = pd.read_csv(tiny_phantom / TRUTH_CSV).set_index("study")
    valid = read_chexpert(tiny_phantom / "valid.csv").drop_duplicates("study").set_index("study")
    for obs in OBSERVATIONS:
        assert (truth.loc[valid.index, f"{obs}|truth"] == valid[obs]).all(), obs
    train = read_chexpert(tiny_phantom / "train.csv").drop_duplicates("study").set_index("study")
    for obs in ("Edema", "Consolidation"):
        uncertain = train.index[train[obs] == -1.0]
        assert set(truth.loc[uncertain, f"{obs}|category"]) <= {"faint", "mimic"}
    assert "|truth" not in (tiny_phantom / "train.csv").read_text()


def test_same_seed_same_files_and_reuse_is_a_no_op(tmp_path, tiny_phantom):
    again = generate_phantom(tmp_path, workers=2, **TINY_PHANTOM)
    assert (again / "train.csv").read_bytes() == (tiny_phantom / "train.csv").read_bytes()
    first = read_chexpert(again / "train.csv")["Path"].iloc[-1]
    assert (again.parent / first).read_bytes() == (tiny_phantom.parent / first).read_bytes()
    stamp = (again / "train.csv").stat().st_mtime_ns
    assert generate_phantom(tmp_path, **TINY_PHANTOM) == again
    assert (again / "train.csv").stat().st_mtime_ns == stamp


def test_other_seed_gives_other_data(tmp_path, tiny_phantom):
    other = generate_phantom(tmp_path, **{**TINY_PHANTOM, "seed": 4})
    assert (other / "train.csv").read_bytes() != (tiny_phantom / "train.csv").read_bytes()


def test_refuses_other_parameters_and_real_data(tmp_path, tiny_phantom):
    with pytest.raises(DataError, match="other parameters"):
        generate_phantom(tiny_phantom.parent, **{**TINY_PHANTOM, "seed": 99})
    real = tmp_path / "CheXpert-v1.0-small"
    real.mkdir()
    (real / "train.csv").write_text("precious")
    with pytest.raises(DataError, match="not a phantom"):
        generate_phantom(tmp_path, patients=3, valid_patients=2, size=(48, 40))
    assert (real / "train.csv").read_text() == "precious"


def test_interrupted_generation_is_finished_by_the_next_call(tmp_path):
    root = tmp_path / "CheXpert-v1.0-small"
    root.mkdir()
    (root / "phantom_incomplete").write_text("")
    (root / "train.csv").write_text("half written")
    done = generate_phantom(tmp_path, patients=3, valid_patients=2, size=(48, 40))
    assert len(read_chexpert(done / "train.csv")) > 0 and not (root / "phantom_incomplete").exists()


def test_command_line(tmp_path, capsys):
    phantom_cli(
        ["--out", str(tmp_path), "--patients", "4", "--valid-patients", "2", "--size", "48", "40", "--seed", "1"]
    )
    assert "phantom CheXpert in" in capsys.readouterr().out
    assert read_chexpert(tmp_path / "CheXpert-v1.0-small" / "train.csv")["patient"].nunique() == 4


def test_read_truth_gives_findings_expected_answer_and_controls(tiny_phantom):
    truth = read_truth(tiny_phantom)
    meta = json.loads((tiny_phantom / TRUTH_JSON).read_text())
    assert truth.expected == meta["expected_better_policy"] and set(truth.expected) == set(OBSERVATIONS)
    assert truth.positive_controls == meta["positive_controls"] and truth.null_controls == meta["null_controls"]
    valid = read_chexpert(tiny_phantom / "valid.csv").drop_duplicates("study").set_index("study")
    assert (truth.findings.loc[valid.index, "Edema"] == valid["Edema"]).all()
    kinds = truth.categories  # the latent kind per study; truly positive exactly for clear and faint
    assert list(kinds.columns) == [o for o in OBSERVATIONS if o != "No Finding"]
    assert set(kinds.stack()) <= {"none", "clear", "faint", "mimic"}
    assert ((kinds == "clear") | (kinds == "faint")).equals(truth.findings[kinds.columns].reindex(kinds.index) == 1)
    assert read_truth(tiny_phantom.parent / "nowhere") is None


def test_an_old_sidecar_is_refreshed_on_reuse_and_refused_when_read(tmp_path):
    root = generate_phantom(tmp_path, workers=1, **TINY_PHANTOM)
    record = json.loads((root / TRUTH_JSON).read_text())
    old = {k: v for k, v in record.items() if k not in ("sidecar_version", "expected_better_policy")}
    (root / TRUTH_JSON).write_text(json.dumps(old | {"better_policy": {"Edema": "U-Ones"}}))
    with pytest.raises(DataError, match="old phantom sidecar"):
        read_truth(root)
    generate_phantom(tmp_path, workers=1, **TINY_PHANTOM)
    assert read_truth(root).expected == record["expected_better_policy"]


def test_mimic_style_changes_only_the_images_of_mimics(tmp_path, tiny_phantom):
    meta = json.loads((tiny_phantom / TRUTH_JSON).read_text())
    assert meta["params"]["mimics"] == "faint-sign"  # the default: faint and mimic look alike by construction
    other = generate_phantom(tmp_path, workers=1, mimics="look-alike", **TINY_PHANTOM)
    assert (other / "train.csv").read_bytes() == (tiny_phantom / "train.csv").read_bytes()  # same labels
    truth = pd.read_csv(tiny_phantom / TRUTH_CSV).set_index("study")
    has_mimic = (truth.filter(like="|category") == "mimic").any(axis=1)
    rows = read_chexpert(tiny_phantom / "train.csv")
    same = [(other.parent / p).read_bytes() == (tiny_phantom.parent / p).read_bytes() for p in rows["Path"]]
    same = pd.Series(same, index=rows["study"])
    assert same[~has_mimic.reindex(same.index).to_numpy()].all()  # no mimic: identical pixels
    assert not same[has_mimic.reindex(same.index).to_numpy()].any()  # a mimic: drawn otherwise


def test_a_phantom_from_before_the_mimic_option_counts_as_look_alike(tmp_path):
    root = generate_phantom(tmp_path, workers=1, mimics="look-alike", **TINY_PHANTOM)
    record = json.loads((root / TRUTH_JSON).read_text())
    params = {k: v for k, v in record["params"].items() if k != "mimics"}
    (root / TRUTH_JSON).write_text(json.dumps(record | {"params": params, "sidecar_version": 2}))
    with pytest.raises(DataError, match="'mimics': 'look-alike'.*'mimics': 'faint-sign'"):
        generate_phantom(tmp_path, workers=1, **TINY_PHANTOM)
    assert generate_phantom(tmp_path, workers=1, mimics="look-alike", **TINY_PHANTOM) == root  # reused, refreshed
    assert json.loads((root / TRUTH_JSON).read_text())["params"]["mimics"] == "look-alike"
    with pytest.raises(ValueError, match="faint-sign"):
        generate_phantom(tmp_path / "x", mimics="lookalike", **TINY_PHANTOM)


def _truth_and_reports(root):
    truth = pd.read_csv(root / TRUTH_CSV).set_index("study")
    train = read_chexpert(root / "train.csv").drop_duplicates("study").set_index("study")
    return truth, train


@pytest.mark.parametrize("parent", sorted(HIERARCHY))
def test_a_parent_is_clear_only_on_a_clear_sign(tiny_phantom, parent):
    """Every study: a parent recorded clear shows a clear sign (its own or a clear child's); one resting
    only on faint child signs is recorded faint and is not reported (the labeler does not propagate)."""
    truth, train = _truth_and_reports(tiny_phantom)
    category, severity = truth[f"{parent}|category"], truth[f"{parent}|severity"]
    assert (severity[category == "clear"] >= 0.45).all()
    assert (severity[category == "faint"] <= 0.3).all()
    children = [truth[f"{c}|category"] for c in HIERARCHY[parent]]
    child_clear = pd.concat(children, axis=1).eq("clear").any(axis=1)
    child_faint = pd.concat(children, axis=1).eq("faint").any(axis=1)
    through_faint = child_faint & ~child_clear & (severity <= 0.3) & (category != "none")
    assert (category[through_faint] == "faint").all()
    # a faint-only parent is counted and its children's positives make it truly positive
    assert (truth.loc[child_clear | child_faint, f"{parent}|truth"] == 1).all()


def test_no_finding_is_never_reported_beside_a_pathology(tiny_phantom):
    """CheXpert's labeler rule for every study of train.csv: No Finding = 1 only when no pathology
    (Support Devices excepted) is labelled positive or uncertain."""
    _, train = _truth_and_reports(tiny_phantom)
    finding = train[list(PATHOLOGIES)].isin([1.0, -1.0]).any(axis=1)
    assert (train["No Finding"] == 1.0).any()
    assert not (finding & (train["No Finding"] == 1.0)).any()


@pytest.fixture(scope="module")
def measured_phantom(tmp_path_factory):
    return generate_phantom(tmp_path_factory.mktemp("measured"), workers=1, label_noise="measured", **TINY_PHANTOM)


def test_measured_noise_phantom_records_its_noise_and_its_own_answer(measured_phantom, tiny_phantom):
    meta = json.loads((measured_phantom / TRUTH_JSON).read_text())
    assert meta["params"]["label_noise"] == meta["label_noise"] == "measured"
    assert meta["expected_better_policy"] == {
        o: e.verdict for o, e in ex.expected_answer(label_noise="measured").items()
    }
    assert meta["primary_positive_control"] == "Atelectasis"
    assert len(meta["measured_noise"]) == 2 * len(OBSERVATIONS)
    # same truth (same seed), other report labels; the truth rules hold here too
    hand = pd.read_csv(tiny_phantom / TRUTH_CSV)
    assert pd.read_csv(measured_phantom / TRUTH_CSV).equals(hand)
    assert (measured_phantom / "train.csv").read_bytes() != (tiny_phantom / "train.csv").read_bytes()
    _, train = _truth_and_reports(measured_phantom)
    assert not (train[list(PATHOLOGIES)].isin([1.0, -1.0]).any(axis=1) & (train["No Finding"] == 1.0)).any()
    with pytest.raises(DataError, match="other parameters"):
        generate_phantom(measured_phantom.parent, workers=1, **TINY_PHANTOM)  # hand-set asked: not reused
    with pytest.raises(ValueError, match="label_noise"):
        generate_phantom(measured_phantom.parent / "x", label_noise="real", **TINY_PHANTOM)


def test_command_line_label_noise(tmp_path):
    phantom_cli(
        ["--out", str(tmp_path), "--patients", "3", "--valid-patients", "2", "--size", "48", "40"]
        + ["--test-patients", "0", "--label-noise", "measured"]
    )
    assert (
        json.loads((tmp_path / "CheXpert-v1.0-small" / TRUTH_JSON).read_text())["params"]["label_noise"] == "measured"
    )


SHARED_LABELS = PROJECT_ROOT.parent / "shared" / "data" / "cheXpert-test-set-labels"


@pytest.mark.skipif(
    not (SHARED_LABELS / "groundtruth.csv").is_file(),
    reason=f"the public test-set labels (rajpurkarlab/cheXpert-test-set-labels a03eb34) are not at {SHARED_LABELS}",
)
def test_shipped_measured_noise_table_equals_the_public_files():
    shipped = mn.read_counts()
    assert shipped.equals(mn.count_table(SHARED_LABELS))
    assert shipped[list(mn.REPORT_LABELS)].to_numpy().sum() == 14 * 500  # every study once per observation
    atelectasis = shipped.set_index(["observation", "truth"]).loc[("Atelectasis", 1)]
    assert (atelectasis["uncertain"], atelectasis["positive"]) == (44, 29)  # 44 of 81 uncertain truly positive


def test_shipped_measured_noise_table_names_its_source():
    head = mn.TABLE.read_text().splitlines()[:6]
    assert any("rajpurkarlab/cheXpert-test-set-labels" in line and "a03eb34" in line for line in head)
    rates = mn.conditional_rates()
    assert all(abs(sum(r[t].values()) - 1) < 1e-12 for r in rates.values() for t in (0, 1))


def test_a_version_3_sidecar_still_reads_but_its_phantom_is_not_reused(tmp_path):
    """A phantom drawn before truth model 2 (sidecar version 3, no truth_model / label_noise in its
    params): read_truth reads its own answer; generate_phantom refuses to reuse it as a current phantom."""
    root = generate_phantom(tmp_path, workers=1, **TINY_PHANTOM)
    record = json.loads((root / TRUTH_JSON).read_text())
    params = {k: v for k, v in record["params"].items() if k not in ("truth_model", "label_noise")}
    old = record | {"params": params, "sidecar_version": 3, "expected_better_policy": {"Atelectasis": "U-Ones"}}
    (root / TRUTH_JSON).write_text(json.dumps(old))
    assert read_truth(root).expected == {"Atelectasis": "U-Ones"}
    with pytest.raises(DataError, match="'truth_model': 1.*'truth_model': 2"):
        generate_phantom(tmp_path, workers=1, **TINY_PHANTOM)
