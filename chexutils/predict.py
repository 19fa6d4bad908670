"""Run a model over a loader, and write the image-level predictions_<split>.csv."""

import numpy as np
import pandas as pd
import torch

from .devices import autocast
from .io import write_table
from .labels import OBSERVATIONS


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
