import pytest

from chexutils.core import labels
from chexutils.data.chexpert import CSV_COLUMNS


def test_observations_are_the_14_chexpert_columns_in_file_order():
    assert len(labels.OBSERVATIONS) == 14
    assert CSV_COLUMNS[5:] == labels.OBSERVATIONS
    assert labels.OBSERVATIONS[0] == "No Finding" and labels.OBSERVATIONS[-1] == "Support Devices"


def test_competition_tasks_are_five_observations():
    assert set(labels.COMPETITION_TASKS) == {
        "Atelectasis",
        "Cardiomegaly",
        "Consolidation",
        "Edema",
        "Pleural Effusion",
    }
    assert set(labels.COMPETITION_TASKS) <= set(labels.OBSERVATIONS)


def test_hierarchy_names_observations_and_parent_map_inverts_it():
    for parent, children in labels.HIERARCHY.items():
        assert parent in labels.OBSERVATIONS
        for child in children:
            assert labels.PARENT[child] == parent
    assert labels.PARENT["Cardiomegaly"] == "Enlarged Cardiomediastinum"
    assert set(labels.HIERARCHY["Lung Opacity"]) == {
        "Edema",
        "Consolidation",
        "Pneumonia",
        "Lung Lesion",
        "Atelectasis",
    }


def test_pathologies_exclude_no_finding_and_devices():
    assert "No Finding" not in labels.PATHOLOGIES and "Support Devices" not in labels.PATHOLOGIES
    assert len(labels.PATHOLOGIES) == 12


def test_unknown_observation_fails_with_the_known_names():
    with pytest.raises(KeyError, match="Edema"):
        labels.check_observation("Oedema")
    assert labels.check_observation("Edema") == "Edema"
