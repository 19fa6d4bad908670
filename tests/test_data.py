import numpy as np
import pandas as pd
import pytest
from conftest import chexpert_rows, write_chexpert
from PIL import Image

from chexutils.core.labels import OBSERVATIONS
from chexutils.data.chexpert import DataError, read_chexpert, read_image, write_chexpert_csv


def test_reads_and_parses_columns(chexpert_dir, tmp_path):
    frame = read_chexpert(chexpert_dir)
    assert len(frame) == 4
    assert frame.loc[0, "patient"] == "patient00001"
    assert frame.loc[1, "study"] == "patient00001/study1"
    assert list(frame["view"]) == ["view1", "view2", "view1", "view2"]
    assert list(frame["frontal"]) == [True, False, True, False]
    assert list(frame["line"]) == [2, 3, 4, 5]
    assert frame.loc[0, "image"] == str((tmp_path / frame.loc[0, "Path"]).resolve())
    assert frame["Age"].dtype == float
    values = frame[list(OBSERVATIONS)].to_numpy()
    assert set(np.unique(values[~np.isnan(values)])) == {1.0, 0.0, -1.0}
    assert np.isnan(values).any()  # blank stays NaN, not negative


def test_columns_found_by_name_not_position(tmp_path):
    rows = chexpert_rows()
    shuffled = rows[list(reversed(rows.columns))]
    frame = read_chexpert(write_chexpert(tmp_path, shuffled))
    assert (
        frame["Edema"].fillna(9).to_numpy()
        == read_chexpert(write_chexpert(tmp_path / "b", rows))["Edema"].fillna(9).to_numpy()
    ).all()


def test_full_resolution_prefix_and_explicit_root(tmp_path):
    csv_path = write_chexpert(tmp_path, chexpert_rows(prefix="CheXpert-v1.0"))
    moved = tmp_path / "elsewhere.csv"
    moved.write_text(csv_path.read_text())
    assert len(read_chexpert(moved, root=tmp_path)) == 4


def test_metadata_only_without_images(tmp_path):
    csv_path = write_chexpert(tmp_path, chexpert_rows(), images=False)
    assert len(read_chexpert(csv_path, check_files=False)) == 4
    with pytest.raises(DataError, match=r"train\.csv lines 2, 3, 4, 5: image .* does not exist"):
        read_chexpert(csv_path)


def _bad(tmp_path, mutate, images=False):
    rows = chexpert_rows()
    mutate(rows)
    return write_chexpert(tmp_path, rows, images=images)


@pytest.mark.parametrize(
    "mutate, pattern",
    [
        (lambda r: r.pop("Edema"), r"train\.csv line 1: missing column\(s\) 'Edema'"),
        (
            lambda r: setattr(r, "columns", [c.replace("Pleural Effusion", "Pleural Efusion") for c in r.columns]),
            r"line 1: missing column\(s\) 'Pleural Effusion' \(found 'Pleural Efusion' — renamed\?\)",
        ),
        (
            lambda r: r.__setitem__("Edema", ["1.0", "2", "0.0", "yes"]),
            r"train\.csv lines 3, 5: column 'Edema' has value '2'; expected 1\.0, 0\.0, -1\.0 or blank",
        ),
        (
            lambda r: r.loc.__setitem__((2, "Path"), "CheXpert-v1.0-small/train/p1/study1/view1_frontal.jpg"),
            r"train\.csv line 4: Path 'CheXpert-v1.0-small/train/p1/study1/view1_frontal.jpg' does not match the CheXpert pattern",
        ),
        (lambda r: r.loc.__setitem__((3, "Path"), r.loc[0, "Path"]), r"train\.csv lines 2, 5: duplicate Path"),
        (lambda r: r.loc.__setitem__((1, "Age"), "old"), r"train\.csv line 3: column 'Age' has value 'old'"),
        (
            lambda r: r.loc.__setitem__((0, "Frontal/Lateral"), "PA"),
            r"train\.csv line 2: column 'Frontal/Lateral' has value 'PA'",
        ),
    ],
)
def test_bad_csv_is_one_data_error_naming_file_and_line(tmp_path, mutate, pattern):
    with pytest.raises(DataError, match=pattern) as info:
        read_chexpert(_bad(tmp_path, mutate), check_files=False)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)


def test_empty_file_and_header_only(tmp_path):
    empty = tmp_path / "CheXpert-v1.0-small" / "train.csv"
    empty.parent.mkdir(parents=True)
    empty.write_text("")
    with pytest.raises(DataError, match=r"train\.csv line 1: empty file"):
        read_chexpert(empty)
    empty.write_text(",".join(chexpert_rows().columns) + "\n")
    with pytest.raises(DataError, match=r"train\.csv line 2: no data rows"):
        read_chexpert(empty)
    with pytest.raises(DataError, match="does not exist"):
        read_chexpert(tmp_path / "nope.csv")


def test_write_then_read_round_trip(chexpert_dir, tmp_path):
    frame = read_chexpert(chexpert_dir)
    out = write_chexpert_csv(frame, chexpert_dir.parent / "copy.csv")
    again = read_chexpert(out)
    pd.testing.assert_frame_equal(again[list(OBSERVATIONS)], frame[list(OBSERVATIONS)])
    assert not out.with_name("copy.csv.tmp").exists()


def test_read_image_gives_uint8_grayscale(tmp_path):
    path = tmp_path / "x.jpg"
    Image.fromarray(np.full((30, 40, 3), 120, np.uint8), mode="RGB").save(path)
    pixels = read_image(path)
    assert pixels.shape == (30, 40) and pixels.dtype == np.uint8
    assert abs(int(pixels.mean()) - 120) <= 2


def test_corrupt_and_truncated_jpeg_are_data_errors(tmp_path):
    good = tmp_path / "good.jpg"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8), mode="L").save(good)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"not a jpeg at all")
    for bad in (truncated, garbage):
        with pytest.raises(DataError, match=bad.name):
            read_image(bad)
    with pytest.raises(DataError, match="does not exist"):
        read_image(tmp_path / "missing.jpg")
