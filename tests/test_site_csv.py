"""Training CSVs from another site and from two sites pooled (data/site_csv), and real networks trained on them.

Two tiny phantom hospitals in one data folder (site 1: the phantom CheXpert; site 2: the phantom's second
site in the MIMIC-CXR-JPG layout), 32x32 images, a few dozen patients each; one DenseNet epoch per run."""

import json
import math

import pandas as pd
import pytest

import chexutils.data  # noqa: F401  registers the data sets
from chexutils.core.errors import DataError
from chexutils.core.labels import OBSERVATIONS
from chexutils.core.rundir import RunDir, external_set
from chexutils.data import site_csv
from chexutils.data.chexpert import CSV_COLUMNS, read_chexpert, write_chexpert_csv
from chexutils.data.datasets import read_dataset
from chexutils.data.split import patient_split
from chexutils.evaluation.external import evaluate_run_on
from chexutils.phantom.generate import generate_phantom
from chexutils.phantom.second_site import PATIENTS_CSV, generate_second_site
from chexutils.training.config import make_config
from chexutils.training.train import fit

pytestmark = pytest.mark.usefixtures("one_thread")
SIZE = (32, 32)


@pytest.fixture(scope="module")
def two_sites(tmp_path_factory):
    data = tmp_path_factory.mktemp("sites")
    chexpert_dir = generate_phantom(data, patients=30, valid_patients=16, size=SIZE, seed=0, workers=1)
    site2 = generate_second_site(
        data, patients=30, validate_patients=10, test_patients=16, size=SIZE, seed=0, shift=1.0
    )
    site1 = patient_split(read_chexpert(chexpert_dir / "train.csv"), (0.7, 0.3, 0.0), seed=0)
    rows = {
        "site1_train": site_csv.schema_rows(site1["train"], "chexpert", data),
        "site1_select": site_csv.schema_rows(site1["select"], "chexpert", data),
        **{
            f"site2_{name}": site_csv.site_rows("mimic-cxr-jpg", site2, split, data)
            for name, split in (("train", "train"), ("select", "validate"), ("test", "test"))
        },
    }
    return data, site2, rows


def test_a_site_csv_has_chexperts_columns_and_reads_back_with_namespaced_patients(two_sites, tmp_path):
    data, site2, rows = two_sites
    parts = {name: rows[name] for name in ("site2_train", "site2_select", "site2_test")}
    written = site_csv.write_training_csvs(parts, tmp_path, data)
    header = written["site2_train"].read_text().splitlines()[0].split(",")
    assert tuple(header) == CSV_COLUMNS
    back = read_chexpert(written["site2_train"], root=data)
    native = read_dataset("mimic-cxr-jpg", site2, split="train")
    native = native[native["frontal"] | native["view"].isin(site_csv.LATERAL_VIEWS)].reset_index(drop=True)
    assert back["Path"].str.startswith("mimic-cxr-jpg/files/p1").all()  # relative to the training data_dir
    assert sorted(back["image"]) == sorted(native["image"])
    assert set(back["patient"]) == {f"mimic-cxr-jpg/{p}" for p in native["patient"]}
    assert set(back["study"]) == {f"mimic-cxr-jpg/{s}" for s in native["study"]}
    assert set(back["folder"]) == {"mimic-cxr-jpg"}
    for name in OBSERVATIONS:  # the labels travel unchanged, by image (not by row order)
        ours = back.set_index("image")[name]
        theirs = native.set_index("image").loc[ours.index, name]
        assert ours.fillna(9).tolist() == theirs.fillna(9).tolist()
    assert site_csv.PATIENTS_BESIDE == PATIENTS_CSV  # sex and age from the file beside the release
    assert back["Sex"].isin(("Male", "Female")).all() and back["Age"].between(18, 100).all()
    views = back.groupby("Frontal/Lateral")["AP/PA"].agg(lambda v: set(v.fillna("")))
    assert views["Frontal"] <= {"AP", "PA"} and views["Lateral"] == {""}


def test_images_outside_the_data_dir_are_written_as_absolute_paths(two_sites, tmp_path):
    data, site2, rows = two_sites
    elsewhere = site_csv.site_rows("mimic-cxr-jpg", site2, "validate", tmp_path / "other-data")
    assert elsewhere["Path"].str.startswith(str(site2.resolve())).all()
    written = site_csv.write_training_csvs({"site2_select": elsewhere}, tmp_path, tmp_path / "other-data")
    back = read_chexpert(written["site2_select"], root=tmp_path / "other-data")
    assert sorted(back["image"]) == sorted(str(data.resolve()) + "/" + rows["site2_select"]["Path"])
    assert back["patient"].tolist() == rows["site2_select"]["patient"].tolist()


def test_chexpert_patient_1_and_mimic_subject_1_are_different_patients(tmp_path):
    frame = pd.DataFrame(
        {
            "Path": [
                "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg",
                "mimic-cxr-jpg/files/p10/p1/s1/a-b.jpg",
            ],
            "Sex": ["Male", ""],
            "Age": [60.0, float("nan")],
            "Frontal/Lateral": ["Frontal", "Frontal"],
            "AP/PA": ["AP", "PA"],
            **{name: [1.0, 1.0] for name in OBSERVATIONS},
        }
    )
    back = read_chexpert(write_chexpert_csv(frame, tmp_path / "mixed.csv"), root=tmp_path, check_files=False)
    assert back["patient"].tolist() == ["patient00001", "mimic-cxr-jpg/p1"]
    assert back["study"].tolist() == ["patient00001/study1", "mimic-cxr-jpg/p1/s1"]
    assert back["image"].iloc[1] == str(tmp_path.resolve() / "mimic-cxr-jpg/files/p10/p1/s1/a-b.jpg")
    assert site_csv.site_patient("chexpert", "patient00001") != site_csv.site_patient("mimic-cxr-jpg", "p1")


def test_a_path_of_no_known_layout_names_file_line_and_the_layouts(tmp_path):
    frame = pd.DataFrame({"Path": ["elsewhere/x.jpg"], "Sex": [""], "Age": [1.0], "Frontal/Lateral": ["Frontal"]})
    frame = frame.assign(**{"AP/PA": "AP", **{name: 1.0 for name in OBSERVATIONS}})
    path = write_chexpert_csv(frame, tmp_path / "odd.csv")
    with pytest.raises(DataError, match=r"odd\.csv line 2: Path 'elsewhere/x\.jpg'.*mimic-cxr-jpg \("):
        read_chexpert(path, root=tmp_path, check_files=False)


def test_a_patient_shared_between_pooled_splits_is_refused(two_sites, tmp_path):
    _, _, rows = two_sites
    train = site_csv.pool(rows["site1_train"], rows["site2_train"])
    leaked = rows["site2_train"][rows["site2_train"]["patient"] == rows["site2_train"]["patient"].iloc[0]]
    select = site_csv.pool(rows["site1_select"], rows["site2_select"], leaked)
    with pytest.raises(DataError, match=r"patient 'mimic-cxr-jpg/p\d+' is in pooled_train and in pooled_select"):
        site_csv.write_training_csvs({"pooled_train": train, "pooled_select": select}, tmp_path, tmp_path)
    assert not (tmp_path / "pooled_train.csv").exists()  # refused before anything is written
    with pytest.raises(DataError, match="pooled twice"):
        site_csv.pool(rows["site2_train"], rows["site2_train"])


def _train(data, train_csv, select_csv, run_dir):
    cfg = make_config(
        data_dir=str(data),
        train_csv=str(train_csv),
        valid_csv=str(select_csv),
        backbone="densenet121",
        image_size=32,
        epochs=1,
        batch_size=16,
        lr=1e-3,
        policy="U-Ones",
        run_dir=str(run_dir),
        cache_dir=str(run_dir.parent / "cache"),
    )
    return fit(cfg)


def test_a_network_trains_on_site_two_and_on_pooled_sites_and_is_evaluated_at_the_other_site(two_sites, tmp_path):
    data, site2, rows = two_sites
    split = tmp_path / "split"
    site2_csvs = site_csv.write_training_csvs(
        {name: rows[name] for name in ("site2_train", "site2_select")}, split, data
    )
    pooled = {
        "pooled_train": site_csv.pool(rows["site1_train"], rows["site2_train"]),
        "pooled_select": site_csv.pool(rows["site1_select"], rows["site2_select"]),
    }
    pooled_csvs = site_csv.write_training_csvs(pooled, split, data)
    table = site_csv.summary(pooled)
    assert table.loc["pooled_train", "images chexpert"] == len(rows["site1_train"])
    assert table.loc["pooled_train", "images mimic-cxr-jpg"] == len(rows["site2_train"])

    runs = {
        "site 2": _train(data, site2_csvs["site2_train"], site2_csvs["site2_select"], tmp_path / "site2"),
        "pooled": _train(data, pooled_csvs["pooled_train"], pooled_csvs["pooled_select"], tmp_path / "pooled"),
    }
    for name, run in runs.items():
        record = json.loads((run / "config.json").read_text())
        trained = len(rows["site2_train"]) + (len(rows["site1_train"]) if name == "pooled" else 0)
        assert record["train_images"] == trained and record["train_csv"] == str(
            split / f"{name.replace(' ', '')}_train.csv"
        )
        assert RunDir(run).best.is_file()

    # site 2's model at site 1 (CheXpert's evaluation split) and the pooled model at site 2 (the official test)
    for run, dataset, root, evaluated in (
        (runs["site 2"], "chexpert", data, "valid"),
        (runs["pooled"], "mimic-cxr-jpg", site2, "test"),
    ):
        frame = read_dataset(dataset, root, split=evaluated)
        _, metrics, summary = evaluate_run_on(run, dataset, root, n_resamples=20)
        assert summary["dataset"] == dataset and summary["split"] == evaluated
        assert summary["studies"] == frame["study"].nunique()
        predictions = pd.read_csv(RunDir(run).predictions(external_set(dataset)))
        assert len(predictions) == len(frame)
        assert predictions[list(OBSERVATIONS)].stack().between(0, 1).all()
        scored = metrics["auroc"].dropna()
        assert len(scored) and all(0 <= a <= 1 and not math.isnan(a) for a in scored)


def test_notebook_twos_site_step_writes_site_two_and_pooled_csvs_without_shared_patients(two_sites, tmp_path):
    data, site2, rows = two_sites
    site1 = patient_split(read_chexpert(data / "CheXpert-v1.0-small" / "train.csv"), (0.7, 0.3, 0.0), seed=0)
    written, table = site_csv.write_site_split("mimic-cxr-jpg", site2, site1, tmp_path, data)
    assert sorted(written) == sorted(["site2_train", "site2_select", "site2_test", "pooled_train", "pooled_select"])
    read = {name: read_chexpert(path, root=data) for name, path in written.items()}
    for train, other in (
        ("site2_train", "site2_select"),
        ("site2_train", "site2_test"),
        ("pooled_train", "pooled_select"),
        ("pooled_train", "site2_test"),
    ):
        assert not set(read[train]["patient"]) & set(read[other]["patient"]), (train, other)
    assert set(read["pooled_train"]["patient"]) == set(site1["train"]["patient"]) | set(read["site2_train"]["patient"])
    assert (
        table.loc["pooled_select", "patients"]
        == site1["select"]["patient"].nunique() + read["site2_select"]["patient"].nunique()
    )
    assert site_csv.selection_split("mimic-cxr-jpg") == "validate"
    with pytest.raises(DataError, match="chexpert: splits train, valid leave none"):
        site_csv.selection_split("chexpert")


def test_training_refuses_a_hand_made_select_csv_sharing_a_second_site_patient(two_sites, tmp_path):
    data, _, rows = two_sites
    train = write_chexpert_csv(site_csv.pool(rows["site1_train"], rows["site2_train"]), tmp_path / "train.csv")
    leaked = rows["site2_train"].head(1)  # written without write_training_csvs' check
    select = write_chexpert_csv(site_csv.pool(rows["site1_select"], leaked), tmp_path / "select.csv")
    with pytest.raises(
        DataError, match=r"select\.csv: 1 patient\(s\) also in .*train\.csv \(first mimic-cxr-jpg/p\d+\)"
    ):
        _train(data, train, select, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
