"""Shared fixtures: hand-made CheXpert folders and one tiny phantom per test session."""

import socket
import time
import urllib.request

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from chexutils.core.labels import OBSERVATIONS
from chexutils.data.chexpert import CSV_COLUMNS

TINY_PHANTOM = dict(patients=40, valid_patients=12, size=(64, 52), seed=3)


def chexpert_rows(n: int = 4, prefix: str = "CheXpert-v1.0-small") -> pd.DataFrame:
    """``n`` valid rows in the CheXpert schema (as strings), two views per study."""
    rows = []
    for i in range(n):
        patient, study, view = 1 + i // 2, 1, 1 + i % 2
        kind = "frontal" if view == 1 else "lateral"
        row = {
            "Path": f"{prefix}/train/patient{patient:05d}/study{study}/view{view}_{kind}.jpg",
            "Sex": "Female" if i % 3 else "Male",
            "Age": str(40 + i),
            "Frontal/Lateral": kind.capitalize(),
            "AP/PA": "AP" if kind == "frontal" else "",
        }
        row.update({obs: ["1.0", "0.0", "-1.0", ""][(i + j) % 4] for j, obs in enumerate(OBSERVATIONS)})
        rows.append(row)
    return pd.DataFrame(rows, columns=list(CSV_COLUMNS))


def write_chexpert(root, rows: pd.DataFrame, name: str = "train.csv", images: bool = True):
    """Write ``rows`` as ``root/<prefix>/<name>`` and (optionally) a small JPEG for every Path."""
    prefix = rows["Path"].iloc[0].split("/")[0]
    csv_path = root / prefix / name
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    rows.to_csv(csv_path, index=False)
    if images:
        rng = np.random.default_rng(0)
        for path in rows["Path"]:
            target = root / path
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (40, 48), dtype=np.uint8), mode="L").save(target)
    return csv_path


@pytest.fixture
def chexpert_dir(tmp_path):
    """A valid four-image CheXpert folder; returns the train.csv path."""
    return write_chexpert(tmp_path, chexpert_rows())


@pytest.fixture(scope="session")
def tiny_phantom(tmp_path_factory):
    """One tiny phantom for the session; returns its CheXpert folder."""
    from chexutils.phantom.generate import generate_phantom

    return generate_phantom(tmp_path_factory.mktemp("phantom"), workers=1, **TINY_PHANTOM)


def write_dicom(path, pixels: np.ndarray, photometric: str = "MONOCHROME2", bits_stored: int = 12, **elements):
    """Write ``pixels`` as a DICOM file with pydicom (explicit VR little endian), plus extra elements."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID, "DX"
    ds.set_pixel_data(pixels, photometric_interpretation=photometric, bits_stored=bits_stored)
    for name, value in elements.items():
        setattr(ds, name, value)
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture(scope="module")
def one_thread():
    """Tiny CPU tensors run several times faster on one thread than with OpenMP spin-waiting; a module
    opts in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for a JupyterLab server under test)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_jupyter(url: str, token: str, server, log_path, timeout: float = 120) -> None:
    """Poll the server's status API until it answers; fail with the server log's tail if it dies or times out."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=5)
            return
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                raise AssertionError(f"JupyterLab did not start: {log_path.read_text()[-2000:]}") from None
            time.sleep(1)
