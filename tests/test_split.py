import numpy as np
import pandas as pd
import pytest

from chexutils.core.errors import DataError
from chexutils.core.labels import OBSERVATIONS
from chexutils.data.chexpert import read_chexpert
from chexutils.data.split import patient_split, prevalence_spread, split_summary, write_split


@pytest.fixture(scope="module")
def train(tiny_phantom):
    return read_chexpert(tiny_phantom / "train.csv")


def test_no_patient_in_two_splits_and_every_image_kept(train):
    parts = patient_split(train, seed=0)
    patients = [set(p["patient"]) for p in parts.values()]
    assert all(not (a & b) for i, a in enumerate(patients) for b in patients[i + 1 :])
    assert sum(len(p) for p in parts.values()) == len(train)
    assert set(pd.concat(parts.values())["Path"]) == set(train["Path"])
    assert (split_summary(parts)["shared patients"] == 0).all()


def test_reproducible_for_a_seed_and_different_across_seeds(train):
    a, b, c = (patient_split(train, seed=s) for s in (1, 1, 2))
    assert all(a[k]["Path"].tolist() == b[k]["Path"].tolist() for k in a)
    assert any(a[k]["Path"].tolist() != c[k]["Path"].tolist() for k in a)


def test_fractions_respected(train):
    parts = patient_split(train, fractions=(0.6, 0.2, 0.2), seed=0)
    shares = np.array([len(parts[k]) for k in ("train", "select", "held_out")]) / len(train)
    assert np.allclose(shares, (0.6, 0.2, 0.2), atol=0.1)
    assert patient_split(train, fractions=(1.0, 0.0, 0.0))["select"].empty


def _label_frame(n_patients: int, seed: int) -> pd.DataFrame:
    """Patients with 1-6 images each and independent labels of rising prevalence."""
    rng = np.random.default_rng(seed)
    patients = np.repeat([f"patient{i:05d}" for i in range(n_patients)], rng.integers(1, 7, n_patients))
    labels = (rng.random((len(patients), len(OBSERVATIONS))) < np.linspace(0.02, 0.5, len(OBSERVATIONS))).astype(float)
    return pd.DataFrame(labels, columns=list(OBSERVATIONS)).assign(
        patient=patients,
        study=[f"{p}/study{i}" for i, p in enumerate(patients)],
        folder="train",
        line=np.arange(2, len(patients) + 2),
        Path=[f"x{i}" for i in range(len(patients))],
    )


def test_stratification_keeps_prevalences_closer_than_a_random_patient_split():
    frame = _label_frame(800, seed=0)
    stratified = prevalence_spread(split_summary(patient_split(frame, seed=0))).max()
    rng = np.random.default_rng(0)
    random_spreads = []
    for _ in range(5):
        chosen = rng.choice(3, size=frame["patient"].nunique(), p=(0.8, 0.1, 0.1))
        split_of = dict(zip(frame["patient"].unique(), chosen))
        codes = frame["patient"].map(split_of).to_numpy()
        parts = {name: frame[codes == k] for k, name in enumerate(("train", "select", "held_out"))}
        random_spreads.append(prevalence_spread(split_summary(parts)).max())
    assert stratified < 0.03
    assert stratified < 0.5 * np.mean(random_spreads)


def test_patient_under_two_source_folders_is_a_data_error(train):
    leaky = train.copy()
    leaky.loc[leaky.index[-1], "patient"] = leaky.loc[leaky.index[0], "patient"]
    leaky.loc[leaky.index[-1], "folder"] = "valid"
    with pytest.raises(
        DataError, match=rf"patient {leaky.loc[leaky.index[0], 'patient']} appears under several source folders .*lines"
    ):
        patient_split(leaky)


def test_bad_fractions(train):
    with pytest.raises(ValueError, match="sum"):
        patient_split(train, fractions=(0.5, 0.2, 0.2))


def test_written_splits_read_back_in_the_chexpert_schema(train, tiny_phantom, tmp_path):
    parts = patient_split(train, seed=0)
    written = write_split(parts, tmp_path / "split")
    assert sorted(p.name for p in written.values()) == ["held_out.csv", "select.csv", "train.csv"]
    back = read_chexpert(written["select"], root=tiny_phantom.parent)
    assert back["Path"].tolist() == parts["select"]["Path"].tolist()
    np.testing.assert_array_equal(back[list(OBSERVATIONS)].to_numpy(), parts["select"][list(OBSERVATIONS)].to_numpy())
