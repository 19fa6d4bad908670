"""The one bit-depth rule: 8-bit kept, 16-bit PNG and DICOM scaled the same documented way;
DICOM rescale, window and MONOCHROME1; colour and multi-frame refused."""

import numpy as np
import pytest
from conftest import write_dicom
from PIL import Image

from chexutils.core.errors import DataError
from chexutils.data.chexpert import read_image
from chexutils.data.pixels import is_dicom, to_uint8


def ramp(shape=(40, 48), seed=0) -> np.ndarray:
    """Random 8-bit pixels that use the whole range 0..255 (so min..max scaling is the identity)."""
    pixels = np.random.default_rng(seed).integers(0, 256, shape).astype(np.uint8)
    pixels.flat[:2] = (0, 255)
    return pixels


def test_to_uint8_keeps_8_bit_and_scales_deeper_images():
    pixels = ramp()
    assert to_uint8(pixels) is pixels
    np.testing.assert_array_equal(to_uint8(pixels.astype(np.uint16) * 257), pixels)  # 16-bit, full range
    np.testing.assert_array_equal(to_uint8(pixels.astype(np.uint16) * 16, 0, 4080), pixels)  # a given range
    np.testing.assert_array_equal(to_uint8(np.array([[-5.0, 10.0]]), 0, 5), [[0, 255]])  # clipped
    assert (to_uint8(np.full((3, 3), 700, np.uint16)) == 128).all()  # a flat image is mid-grey


def test_16_bit_png_is_scaled_not_clipped_to_white(tmp_path):
    pixels = ramp()
    full = tmp_path / "full16.png"
    Image.fromarray(pixels.astype(np.uint16) * 257).save(full)
    twelve = tmp_path / "twelve_in_16.png"
    Image.fromarray(pixels.astype(np.uint16) * 16).save(twelve)  # 12-bit data in a 16-bit PNG
    assert Image.open(full).mode.startswith("I")
    np.testing.assert_array_equal(read_image(full), pixels)
    np.testing.assert_array_equal(read_image(twelve), pixels)


def test_monochrome1_gives_the_pixels_of_monochrome2(tmp_path):
    stored = ramp().astype(np.uint16) * 16 + 7  # 12-bit values
    mono2 = read_image(write_dicom(tmp_path / "m2.dcm", stored, "MONOCHROME2"))
    mono1 = read_image(write_dicom(tmp_path / "m1.dcm", 4095 - stored, "MONOCHROME1"))
    np.testing.assert_array_equal(mono2, ramp())  # no window: the image's own min..max
    np.testing.assert_array_equal(mono1, mono2)


def test_window_and_rescale_are_applied(tmp_path):
    pixels = ramp()
    stored = pixels.astype(np.uint16) * 16  # 0..4080
    # a window over the whole 0..4080 range maps the 12-bit values back onto the 8-bit ones
    window = dict(WindowCenter=2040, WindowWidth=4080, VOILUTFunction="LINEAR_EXACT")
    np.testing.assert_array_equal(read_image(write_dicom(tmp_path / "w2.dcm", stored, **window)), pixels)
    mirrored = dict(window, WindowCenter=4095 - 2040)
    mono1 = read_image(write_dicom(tmp_path / "w1.dcm", 4095 - stored, "MONOCHROME1", **mirrored))
    np.testing.assert_array_equal(mono1, pixels)
    # a narrow window clips: everything above it is white, below it black
    narrow = read_image(
        write_dicom(tmp_path / "narrow.dcm", stored, WindowCenter=2000, WindowWidth=200, VOILUTFunction="LINEAR_EXACT")
    )
    assert (narrow[stored >= 2100] == 255).all() and (narrow[stored <= 1900] == 0).all()
    # the window is in rescaled units: the same window after slope 2, intercept -1000 selects the same pixels
    rescaled = read_image(
        write_dicom(
            tmp_path / "rescaled.dcm",
            stored,
            RescaleSlope=2,
            RescaleIntercept=-1000,
            WindowCenter=2 * 2000 - 1000,
            WindowWidth=400,
            VOILUTFunction="LINEAR_EXACT",
        )
    )
    assert (rescaled[stored >= 2100] == 255).all() and (rescaled[stored <= 1900] == 0).all()
    assert np.abs(rescaled.astype(int) - narrow).max() <= 1


def test_default_linear_window_mirrors_within_one_grey_level(tmp_path):
    stored = ramp().astype(np.uint16) * 16
    window = dict(WindowCenter=2000, WindowWidth=2000)  # VOI LUT Function absent: LINEAR
    mono2 = read_image(write_dicom(tmp_path / "l2.dcm", stored, **window))
    mono1 = read_image(
        write_dicom(tmp_path / "l1.dcm", 4095 - stored, "MONOCHROME1", **dict(window, WindowCenter=2095))
    )
    difference = np.abs(mono2.astype(int) - mono1)
    assert difference.max() == 1  # pydicom's LINEAR shifts the centre by half a level, so not exact
    assert difference.mean() < 0.2


def test_dicom_is_found_by_magic_without_an_extension(tmp_path):
    path = write_dicom(tmp_path / "IM0001", ramp().astype(np.uint16))
    assert is_dicom(path)
    not_dicom = tmp_path / "README"
    not_dicom.write_text("x" * 200)
    assert not is_dicom(not_dicom) and not is_dicom(tmp_path / "missing")
    np.testing.assert_array_equal(read_image(path), ramp())


def test_colour_multiframe_and_broken_dicoms_are_refused(tmp_path):
    rgb = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(DataError, match=r"colour\.dcm: colour DICOM.*RGB"):
        read_image(write_dicom(tmp_path / "colour.dcm", rgb, "RGB", bits_stored=8))
    frames = np.zeros((3, 8, 8), np.uint16)
    with pytest.raises(DataError, match=r"frames\.dcm: multi-frame DICOM \(3 frames\)"):
        read_image(write_dicom(tmp_path / "frames.dcm", frames))
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(b"\0" * 128 + b"DICM" + b"garbage")
    with pytest.raises(DataError, match="broken.dcm"):
        read_image(broken)
