"""The predict command on a tiny trained run: the run's own preprocessing (a valid JPEG gets its
predictions_select.csv probabilities), PNG and DICOM of the same pixels agree, broken files named."""

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import write_dicom
from PIL import Image

from chexutils.cli.predict import main
from chexutils.core.labels import OBSERVATIONS
from chexutils.core.rundir import RunDir
from chexutils.data.cache import load_resized
from chexutils.data.chexpert import read_chexpert, read_image
from chexutils.scoring.predict import find_images, predict_images
from chexutils.training.config import make_config
from chexutils.training.train import fit

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread per module

# Probabilities of the same pixels predicted in different batches or batch rows: float32 reductions
# may differ in their last bits (~1e-7), and the CSVs' 6 decimals may round that into a 1e-6 step
PROB_ATOL = 2e-6


@pytest.fixture(scope="module")
def tiny_run(tiny_phantom, tmp_path_factory):
    """A one-epoch DenseNet121 run at 32 px on the tiny phantom (its predictions_select.csv included)."""
    root = tmp_path_factory.mktemp("predict")
    cfg = make_config(
        data_dir=str(tiny_phantom.parent),
        backbone="densenet121",
        image_size=32,
        epochs=1,
        batch_size=16,
        lr=1e-3,
        run_dir=str(root / "run"),
        cache_dir=str(root / "cache"),
        policy="U-Zeros",
        max_steps_per_epoch=2,
    )
    return fit(cfg)


@pytest.fixture(scope="module")
def valid_image(tiny_phantom):
    """(Path as in the CSV, absolute file) of the first official-valid image."""
    frame = read_chexpert(tiny_phantom / "valid.csv")
    return frame["Path"].iloc[0], frame["image"].iloc[0]


def test_folder_of_jpeg_png_dicoms_and_a_broken_file(tiny_run, valid_image, tmp_path, capsys):
    csv_path, jpeg = valid_image
    folder = tmp_path / "new images"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(jpeg, folder / "valid.jpg")
    pixels = read_image(jpeg)
    Image.fromarray(pixels, mode="L").save(folder / "sub" / "same.png")
    stored = pixels.astype(np.uint16) * 16  # 12-bit; a window over 0..4080 gives back the 8-bit pixels
    window = dict(WindowCenter=2040, WindowWidth=4080, VOILUTFunction="LINEAR_EXACT")
    write_dicom(folder / "sub" / "mono2.dcm", stored, "MONOCHROME2", **window)
    write_dicom(folder / "mono1", 4095 - stored, "MONOCHROME1", **dict(window, WindowCenter=4095 - 2040))
    (folder / "broken.jpg").write_bytes(b"not an image")
    (folder / "notes.txt").write_text("not picked up")
    out = tmp_path / "predictions.csv"

    code = main([str(tiny_run), str(folder), "--out", str(out), "--batch-size", "3", "--device", "cpu"])
    captured = capsys.readouterr()

    assert code == 1
    assert "broken.jpg" in captured.err and "notes.txt" not in captured.err + out.read_text()
    assert "images/s" in captured.out
    table = pd.read_csv(out)
    assert list(table.columns) == ["path", *OBSERVATIONS]
    by_name = table.assign(name=table["path"].map(lambda p: p.rsplit("/", 1)[-1])).set_index("name")
    assert sorted(by_name.index) == ["mono1", "mono2.dcm", "same.png", "valid.jpg"]
    # The decoding rule is exact: every format gives the model bit-for-bit the JPEG's resized pixels
    config = RunDir(tiny_run).config()
    decoded = ("valid.jpg", "sub/same.png", "sub/mono2.dcm", "mono1")
    seen = {Path(n).name: load_resized(folder / n, config["image_size"], config["resize_method"]) for n in decoded}
    for other in ("same.png", "mono2.dcm", "mono1"):
        np.testing.assert_array_equal(seen[other], seen["valid.jpg"], err_msg=other)
    # The probabilities are not: the images sit at different places in different batches (and in
    # training's evaluation, other batches of another size), and float32 conv/matmul reductions
    # may accumulate in another order there (differences of ~1e-7 seen); the CSVs then round to
    # 6 decimals, which can turn that into one step of 1e-6. So: equal to within 2e-6.
    probs = by_name[list(OBSERVATIONS)]
    expected = pd.read_csv(tiny_run / "predictions_select.csv").set_index("Path").loc[csv_path, list(OBSERVATIONS)]
    np.testing.assert_allclose(probs.loc["valid.jpg"].to_numpy(), expected.to_numpy(), rtol=0, atol=PROB_ATOL)
    for other in ("same.png", "mono2.dcm", "mono1"):
        np.testing.assert_allclose(
            probs.loc[other].to_numpy(), probs.loc["valid.jpg"].to_numpy(), rtol=0, atol=PROB_ATOL, err_msg=other
        )


def test_unwindowed_monochrome1_and_monochrome2_agree(tiny_run, tmp_path):
    stored = np.random.default_rng(1).integers(200, 3900, (60, 50)).astype(np.uint16)
    first = write_dicom(tmp_path / "a.dcm", stored, "MONOCHROME2")
    second = write_dicom(tmp_path / "b.dcm", 4095 - stored, "MONOCHROME1")
    # Exact where the arithmetic is exact: the bit-depth rule inverts MONOCHROME1 within its range
    # in integers, so both files decode (and resize) to the same pixels, bit for bit
    config = RunDir(tiny_run).config()
    np.testing.assert_array_equal(read_image(second), read_image(first))
    size, method = config["image_size"], config["resize_method"]
    np.testing.assert_array_equal(load_resized(second, size, method), load_resized(first, size, method))
    table, failures, _ = predict_images(tiny_run, [first, second], device="cpu", show=False)
    assert failures == [] and len(table) == 2
    probs = table[list(OBSERVATIONS)].to_numpy()
    assert np.isfinite(probs).all()
    # Not exact for the probabilities: the two images are rows 0 and 1 of one float32 batch, and
    # conv/matmul kernels may reduce different rows in a different order (they differed by 6e-8)
    np.testing.assert_allclose(probs[0], probs[1], rtol=0, atol=1e-6)


def test_missing_paths_and_nothing_readable(tiny_run, tmp_path, capsys):
    broken = tmp_path / "x.png"
    broken.write_bytes(b"\x89PNG broken")
    out = tmp_path / "out.csv"
    code = main([str(tiny_run), str(broken), str(tmp_path / "nowhere"), "--out", str(out), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 1 and not out.exists()
    assert "x.png" in err and "nowhere: no such file or folder" in err


def test_a_folder_that_is_not_a_run_is_a_clear_error(tmp_path, capsys):
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(image)
    assert main([str(tmp_path), str(image), "--out", str(tmp_path / "out.csv")]) == 2
    assert "config.json: file does not exist" in capsys.readouterr().err
    (tmp_path / "config.json").write_text('{"backbone": "densenet121", "head": "binary"}')
    assert main([str(tmp_path), str(image), "--out", str(tmp_path / "out.csv")]) == 2
    assert "best.pt: file does not exist" in capsys.readouterr().err


def test_find_images_is_recursive_and_sorted(tmp_path):
    for name in ("b/2.JPG", "a/1.png", "a/deep/3.jpeg", "c.dcm", "skip.txt", "noext"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    found, missing = find_images([tmp_path])
    assert [p.relative_to(tmp_path).as_posix() for p in found] == ["a/1.png", "a/deep/3.jpeg", "b/2.JPG", "c.dcm"]
    assert missing == []


def test_heatmaps_flag_writes_an_overlay_per_image_and_observation(tiny_run, valid_image, tmp_path):
    _, jpeg = valid_image
    out, folder = tmp_path / "p.csv", tmp_path / "maps"
    assert main([str(tiny_run), str(jpeg), "--out", str(out), "--device", "cpu", "--heatmaps", str(folder)]) == 0
    index = pd.read_csv(folder / "heatmaps.csv")
    assert len(index) == len(OBSERVATIONS) and set(index["observation"]) == set(OBSERVATIONS)
    assert all(Path(p).is_file() and Path(p).stat().st_size > 0 for p in index["png"])
