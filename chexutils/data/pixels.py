"""Pixel values to the 8-bit grey image the models see: the one bit-depth rule, and DICOM reading.

The rule (``to_uint8``), used for 16-bit PNGs and for DICOM alike, and so by the image cache:

- 8-bit grey (uint8) is kept as it is, so JPEGs give the same pixels as always;
- anything else (16-bit, or float after a DICOM rescale) is mapped linearly from a range ``[low, high]`` onto 0..255 and rounded
  (half to even), values outside clipped. The range is the file's display window when it has
  one (DICOM VOI LUT or Window Center/Width: the window's own output range), otherwise the
  image's own minimum..maximum (16-bit PNGs, DICOM without a window), because stored ranges
  (12 or 16 bit) are usually far wider than the anatomy;
- MONOCHROME1 (bone dark) is inverted inside that range before rounding, so bone is bright as
  in the CheXpert JPEGs, and a MONOCHROME1 file gives exactly the pixels of the MONOCHROME2 file
  of the same image.

DICOM goes through pydicom: modality rescale (slope/intercept or modality LUT) with
``apply_modality_lut``, then the VOI LUT / window with ``apply_voi_lut``, then the rule above.
Colour and multi-frame DICOMs are refused (a chest radiograph is one grey frame).
"""

from pathlib import Path

import numpy as np

from chexutils.core.errors import DataError

DICOM_SUFFIXES = (".dcm", ".dicom")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
GREY_INTERPRETATIONS = ("MONOCHROME1", "MONOCHROME2")


def to_uint8(
    values: np.ndarray, low: float | None = None, high: float | None = None, invert: bool = False
) -> np.ndarray:
    """The module's bit-depth rule: uint8 kept as is; otherwise ``[low, high]`` (default: the image's
    min..max) linearly onto 0..255, optionally inverted within that range, clipped and rounded."""
    values = np.asarray(values)
    if values.dtype == np.uint8 and low is None and high is None:
        return 255 - values if invert else values
    values = values.astype(np.float64)
    low = float(values.min()) if low is None else float(low)
    high = float(values.max()) if high is None else float(high)
    if high <= low:  # a flat image: one grey level, mid-grey rather than a division by zero
        return np.full(values.shape, 128, np.uint8)
    # (high - v) and (v - low) are exact for integer-valued inputs, so inverting a MONOCHROME1
    # image gives bit-for-bit the MONOCHROME2 result
    scaled = (high - values if invert else values - low) / (high - low)
    return np.rint(np.clip(scaled, 0.0, 1.0) * 255.0).astype(np.uint8)


def is_dicom(path) -> bool:
    """A .dcm/.dicom name, or any file (e.g. extension-less) with the 'DICM' magic at byte 128."""
    path = Path(path)
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return False
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def read_dicom(path) -> np.ndarray:
    """One grey DICOM frame as (H, W) uint8: modality rescale, VOI LUT / window, MONOCHROME1 inverted."""
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        ds = pydicom.dcmread(path)
    except FileNotFoundError:
        raise DataError(f"{path}: image file does not exist") from None
    except (InvalidDicomError, OSError, ValueError, EOFError) as err:
        raise DataError(f"{path}: not a readable DICOM file ({err})") from None
    if "PixelData" not in ds:
        raise DataError(f"{path}: DICOM file holds no image (no Pixel Data element); expected a radiograph")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames != 1:
        raise DataError(f"{path}: multi-frame DICOM ({frames} frames); expected one frame per file")
    interpretation = str(ds.get("PhotometricInterpretation", ""))
    samples = int(ds.get("SamplesPerPixel", 1))
    if samples != 1 or interpretation not in GREY_INTERPRETATIONS:
        raise DataError(
            f"{path}: colour DICOM (PhotometricInterpretation {interpretation!r}, {samples} samples "
            f"per pixel); expected a grey image ({' or '.join(GREY_INTERPRETATIONS)})"
        )
    try:
        stored = ds.pixel_array
    except Exception as err:  # pydicom raises many types for missing decoders and broken data
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", syntax)
        raise DataError(f"{path}: cannot decode the DICOM pixel data (transfer syntax {name}): {err}") from None
    if stored.ndim != 2:
        raise DataError(f"{path}: DICOM pixel array has shape {stored.shape}; expected one 2-D grey frame")
    values = apply_modality_lut(stored, ds)
    windowed = ds.get("VOILUTSequence") or ("WindowCenter" in ds and "WindowWidth" in ds)
    low = high = None
    if windowed:
        low, high = _voi_output_range(stored, ds)
        values = apply_voi_lut(values, ds)
    return to_uint8(values, low, high, invert=interpretation == "MONOCHROME1")


def _voi_output_range(stored: np.ndarray, ds) -> tuple[float, float]:
    """The window's own output range: the lowest and highest storable values passed through
    pydicom's modality and VOI transforms (so the range follows pydicom, not a copy of its rules)."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    bits = int(ds.get("BitsStored", stored.dtype.itemsize * 8))
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    extremes = np.array([-(2 ** (bits - 1)), 2 ** (bits - 1) - 1] if signed else [0, 2**bits - 1], dtype=np.int64)
    ends = np.asarray(apply_voi_lut(apply_modality_lut(extremes, ds), ds), dtype=np.float64)
    return float(ends.min()), float(ends.max())
