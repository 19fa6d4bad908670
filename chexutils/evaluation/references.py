"""Published reference numbers (with citations), to set beside the workbook's own results.

``references.csv`` (tidy: source, model, metric, observation, value, ci_low, ci_high, note) holds
the original study's tables, the CheXNet and CheXNeXt columns the original study copied, the CheXpert paper's best
policy per task, and the 5-task means of Pham et al. 2020 and LibAUC. All are published figures on
the official valid set unless the note says otherwise — never numbers this workbook measured.
"""

from pathlib import Path

import pandas as pd

from chexutils.core.errors import DataError
from chexutils.core.labels import OBSERVATIONS

REFERENCES_CSV = Path(__file__).with_name("references.csv")
SUMMARY_ROWS = ("mean of 5 competition tasks",)
COLUMNS = ("source", "model", "metric", "observation", "value", "ci_low", "ci_high", "note")


def load_references(path=REFERENCES_CSV, metric: str | None = "auroc") -> pd.DataFrame:
    """The reference rows (optionally one metric), checked: known observations, values in [0, 1]."""
    table = pd.read_csv(path, keep_default_na=False, na_values={"value": [""], "ci_low": [""], "ci_high": [""]})
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise DataError(f"{path} line 1: missing column(s) {', '.join(missing)}; expected {', '.join(COLUMNS)}")
    unknown = ~table["observation"].isin(OBSERVATIONS + SUMMARY_ROWS)
    bad_value = ~table["value"].between(0, 1)
    for mask, what in ((unknown, "an unknown observation"), (bad_value, "a value outside [0, 1]")):
        if mask.any():
            line = int(mask.to_numpy().argmax()) + 2
            raise DataError(f"{path} line {line}: {what} ({table.loc[mask].iloc[0].to_dict()})")
    return table[table["metric"] == metric].reset_index(drop=True) if metric else table


def reference_table(metric: str = "auroc", path=REFERENCES_CSV) -> pd.DataFrame:
    """Observations x published models (value only), observations in CheXpert order, summary rows last."""
    table = load_references(path, metric).pivot_table(
        index="observation", columns="model", values="value", aggfunc="first"
    )
    order = [o for o in OBSERVATIONS + SUMMARY_ROWS if o in table.index]
    return table.loc[order]
