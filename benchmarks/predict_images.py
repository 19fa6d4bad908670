"""Throughput and agreement of ``python -m chexutils predict`` on a phantom: JPEG folders and 12-bit DICOMs.

    python benchmarks/predict_images.py [--patients 200] [--size 224] [--batch 64] [--device auto]

Trains a one-step DenseNet121 run (a real run folder with predictions_select.csv), then predicts
the official valid JPEGs (max |difference| to predictions_select.csv), the same images written as
12-bit MONOCHROME2 and inverted MONOCHROME1 DICOMs (max |MONO1 - MONO2|), and every train JPEG,
printing images/s for each (image decoding + resize + model, as the command does).
"""

import argparse
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from chexutils.core.labels import OBSERVATIONS
from chexutils.data.chexpert import read_chexpert, read_image
from chexutils.phantom.generate import generate_phantom
from chexutils.scoring.predict import predict_images
from chexutils.training.config import make_config
from chexutils.training.train import fit


def write_dicom(path: Path, stored: np.ndarray, photometric: str) -> None:
    """A 12-bit grey DICOM (explicit VR little endian) written with pydicom."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta, ds.SOPClassUID, ds.SOPInstanceUID = (
        meta,
        meta.MediaStorageSOPClassUID,
        meta.MediaStorageSOPInstanceUID,
    )
    ds.set_pixel_data(stored, photometric_interpretation=photometric, bits_stored=12)
    ds.save_as(path, enforce_file_format=True)


def timed(run, paths, args, label: str) -> pd.DataFrame:
    table, failures, seconds = predict_images(run, paths, args.batch, args.device, args.workers, show=False)
    assert not failures, failures[:3]
    print(f"{label}: {len(table)} images in {seconds:.2f} s = {len(table) / seconds:.1f} images/s", flush=True)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--patients", type=int, default=200)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--work", default=None, help="folder for phantom, cache and run (default: a temp folder)")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp())
    chexpert = generate_phantom(work / "data", patients=args.patients, valid_patients=40, size=(390, 320), seed=0)
    run = fit(
        make_config(
            data_dir=str(work / "data"),
            image_size=args.size,
            batch_size=args.batch,
            epochs=1,
            max_steps_per_epoch=1,
            lr=1e-3,
            device=args.device,
            run_dir=str(work / "run"),
            cache_dir=str(work / "cache"),
        )
    )
    print(
        f"device: {torch.cuda.get_device_name() if torch.cuda.is_available() and args.device != 'cpu' else 'cpu'}; "
        f"{args.size} px, batch {args.batch}, {args.workers} reading workers"
    )
    valid = read_chexpert(chexpert / "valid.csv")
    new = timed(run, valid["image"].tolist(), args, "official valid JPEGs")
    expected = pd.read_csv(run / "predictions_select.csv").set_index("Path").loc[valid["Path"], list(OBSERVATIONS)]
    print(
        f"  max |CLI - predictions_select.csv| = {np.abs(new[list(OBSERVATIONS)].to_numpy() - expected.to_numpy()).max():.2e}"
    )
    dicoms = work / "dicom"
    dicoms.mkdir(exist_ok=True)
    for i, image in enumerate(valid["image"]):
        stored = read_image(image).astype(np.uint16) * 16
        write_dicom(dicoms / f"{i:04d}_m2.dcm", stored, "MONOCHROME2")
        write_dicom(dicoms / f"{i:04d}_m1", 4095 - stored, "MONOCHROME1")  # extension-less
    both = timed(run, [dicoms], args, "12-bit DICOMs (MONO1 + MONO2)")
    both["key"] = both["path"].str.extract(r"(\d{4})_m")[0]
    mono2 = both[both["path"].str.endswith(".dcm")].set_index("key")[list(OBSERVATIONS)]
    mono1 = both[~both["path"].str.endswith(".dcm")].set_index("key").loc[mono2.index, list(OBSERVATIONS)]
    print(f"  max |MONO1 - MONO2| = {np.abs(mono1.to_numpy() - mono2.to_numpy()).max():.2e}")
    train = read_chexpert(chexpert / "train.csv")
    timed(run, train["image"].tolist(), args, "train JPEGs")


if __name__ == "__main__":
    main()
