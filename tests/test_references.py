import pytest

from chexutils.core.errors import DataError
from chexutils.core.labels import COMPETITION_TASKS, OBSERVATIONS
from chexutils.evaluation.references import REFERENCES_CSV, load_references, reference_table


def test_chexpert_paper_best_policy_per_task_is_on_record():
    refs = load_references()
    best = refs[refs["model"].str.startswith("CheXpert best")].set_index("observation")
    assert set(best.index) == set(COMPETITION_TASKS)
    assert best.loc["Atelectasis", "value"] == 0.858 and best.loc["Consolidation", "value"] == 0.939
    assert best.loc["Edema", ["ci_low", "ci_high"]].tolist() == [0.903, 0.980]
    assert (refs["source"].str.len() > 10).all()  # every row carries its citation


def test_table_is_observations_by_model_in_chexpert_order():
    table = reference_table()
    rows = [o for o in table.index if o in OBSERVATIONS]
    assert rows == [o for o in OBSERVATIONS if o in rows]
    assert table.loc["Lung Lesion", "original study DenseNet121-224 U-Ones"] == 0.64
    assert table.loc["mean of 5 competition tasks"].notna().any()


@pytest.mark.parametrize(
    "edit, pattern",
    [
        (lambda t: t.replace("Atelectasis", "Atelektasis", 1), r"line \d+: an unknown observation"),
        (lambda t: t.replace(",0.75,", ",7.5,", 1), r"line \d+: a value outside \[0, 1\]"),
        (lambda t: t.replace("ci_high,", "", 1), "line 1: missing column"),
    ],
)
def test_bad_reference_file_is_a_data_error(tmp_path, edit, pattern):
    path = tmp_path / "refs.csv"
    path.write_text(edit(REFERENCES_CSV.read_text()))
    with pytest.raises(DataError, match=pattern):
        load_references(path)
