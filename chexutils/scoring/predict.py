"""Run a model over a loader and write predictions; and the command line that predicts new images.

    python -m chexutils predict RUN_DIR PATH... --out FILE.csv [--batch-size N] [--device D] [--workers N]

PATH is an image file or a folder searched recursively for .jpg/.jpeg/.png/.dcm and extension-less
DICOM (the 'DICM' magic at byte 128). Each image gets exactly the run's preprocessing: the same
reader (``data.read_image``, DICOM and 16-bit included) and resize (``cache.load_resized`` at the
run's ``image_size`` and ``resize_method``) as its image cache, then the model's own normalisation,
so an image of the official valid set gets the probabilities of the run's own predictions file for that set (``predictions_<set>.csv``).
A file that cannot be read is named on stderr with the reason, the others are still predicted, and
the exit code is 1.
"""

import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from chexutils.core.devices import autocast, pick_device
from chexutils.core.errors import DataError
from chexutils.core.io import write_table
from chexutils.core.labels import OBSERVATIONS
from chexutils.core.rundir import RunDir
from chexutils.data.cache import load_resized
from chexutils.data.pixels import is_dicom
from chexutils.models.backbones import build_model, is_conditional, probabilities
from chexutils.models.checkpoint import load_checkpoint

FOLDER_SUFFIXES = (".jpg", ".jpeg", ".png", ".dcm")  # what a folder search picks up (plus extension-less DICOM)


@torch.no_grad()
def predict_logits(model, loader, n_rows: int, device, amp: bool = False) -> torch.Tensor:
    """Float32 CPU logits for every row, placed by each batch's rows (loader order does not matter)."""
    model.eval()
    out = None
    for images, rows in loader:
        with autocast(device, amp):
            logits = model(images.to(device, non_blocking=True)).float().cpu()
        if out is None:
            out = torch.full((n_rows, *logits.shape[1:]), float("nan"))
        out[rows] = logits
    return out


def write_predictions(frame: pd.DataFrame, probs: np.ndarray, path) -> None:
    """Path, patient, study, frontal and one probability column per observation."""
    table = frame[["Path", "patient", "study", "frontal"]].reset_index(drop=True)
    table = pd.concat([table, pd.DataFrame(np.asarray(probs), columns=list(OBSERVATIONS))], axis=1)
    write_table(table, path, index=False, float_format="%.6f")


def find_images(paths) -> tuple[list[Path], list[str]]:
    """Files given, plus image files under folders given (sorted); and a message per path that does not exist."""
    found, missing = [], []
    for given in map(Path, paths):
        if given.is_dir():
            for path in sorted(p for p in given.rglob("*") if p.is_file()):
                suffix = path.suffix.lower()
                if suffix in FOLDER_SUFFIXES or (suffix == "" and is_dicom(path)):
                    found.append(path)
        elif given.is_file():
            found.append(given)  # named explicitly: tried whatever its name, a failure is reported
        else:
            missing.append(f"{given}: no such file or folder")
    return found, missing


class NewImages(Dataset):
    """Item i = (uint8 (1, S, S) image, i, "") as the run's cache would store it, or (zeros, i, reason)."""

    def __init__(self, paths, size: int, method: str, geometry: str = "square"):
        self.paths, self.size, self.method, self.geometry = list(paths), size, method, geometry

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, row: int):
        try:
            return torch.from_numpy(load_resized(self.paths[row], self.size, self.method, self.geometry))[None], row, ""
        except DataError as err:
            return torch.zeros((1, self.size, self.size), dtype=torch.uint8), row, str(err)


def load_run_model(run_dir, device="cpu"):
    """The run's model with its best.pt weights on ``device`` (eval mode), and its config.json."""
    run = RunDir(run_dir)
    config = run.config()
    best = run.best
    if not best.is_file():
        raise DataError(f"{best}: file does not exist; expected a finished (or imported) run's weights")
    model = build_model(config["backbone"], config["head"])
    model.load_state_dict(load_checkpoint(best)["model"])
    return model.to(torch.device(device)).eval(), config


def predict_images(
    run_dir, paths, batch_size: int = 0, device: str = "auto", workers: int = 0, show: bool = True
) -> tuple[pd.DataFrame, list[str], float]:
    """(table: path + one probability per observation, failures as 'path: reason', seconds)."""
    files, failures = find_images(paths)
    torch_device = pick_device(device)
    model, config = load_run_model(run_dir, torch_device)
    dataset = NewImages(files, config["image_size"], config["resize_method"], config.get("geometry", "square"))
    loader = DataLoader(dataset, batch_size=batch_size or 2 * config["batch_size"], num_workers=workers)
    start = time.perf_counter()
    errors = {}

    def good_batches():
        with tqdm(total=len(dataset), desc="predict", unit="img", disable=not show, mininterval=1) as bar:
            for images, rows, reasons in loader:
                ok = torch.tensor([not r for r in reasons], dtype=torch.bool)
                errors.update({int(i): r for i, r in zip(rows, reasons) if r})
                if ok.any():
                    yield images[ok], rows[ok]
                bar.update(len(rows))

    logits = predict_logits(model, good_batches(), len(dataset), torch_device, config.get("amp", False))
    seconds = time.perf_counter() - start
    failures += [errors[i] for i in sorted(errors)]
    kept = [i for i in range(len(dataset)) if i not in errors]
    probs = (
        probabilities(logits[kept], config["head"], is_conditional(config)).numpy()
        if logits is not None
        else np.empty((0, len(OBSERVATIONS)))
    )
    table = pd.DataFrame(probs, columns=list(OBSERVATIONS))
    table.insert(0, "path", [str(files[i]) for i in kept])
    return table, failures, seconds
