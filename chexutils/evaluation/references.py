"""Published reference numbers (with citations), to set beside the workbook's own results.

``references.csv`` (tidy: source, model, metric, observation, value, ci_low, ci_high, note) holds
the original study's tables, the CheXNet and CheXNeXt columns the original study copied, the CheXpert paper's best
policy per task, and the 5-task means of Pham et al. 2020 and LibAUC. All are published figures on
the official valid set unless the note says otherwise — never numbers this workbook measured.

Two small constants beside it: the public leaderboard's figures for the six example models that are
entries on it (``LEADERBOARD``, official **test** set), and the CheXpert paper's per-task findings on
the uncertainty policies (``CHEXPERT_PAPER_POLICIES``, official valid set).
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


# The public CheXpert leaderboard (official test set). AUC to 3 decimals and "Num Rads Below Curve" as
# displayed: GitHub stanfordmlgroup/stanfordmlgroup.github.io, competitions/chexpert/index.html, commit
# aa0aa41380d6a66b2288dc0c3731558124dc234b. The per-task radiologist counts (COMPETITION_TASKS order):
# the CodaLab dump behind it, same repository, competitions/chexpert/out.json at commit
# d2a045bcd99147db4ef92ea0d6fbc2efa6937866. Keys are the example models' folder names in
# rajpurkarlab/cheXpert-test-set-labels (example_models/predictions/standard/<key>_predictions.csv).
LEADERBOARD_SOURCE = (
    "public CheXpert leaderboard: stanfordmlgroup/stanfordmlgroup.github.io competitions/chexpert/index.html "
    "@ aa0aa41380d6a66b2288dc0c3731558124dc234b (per-task counts: competitions/chexpert/out.json @ d2a045bc)"
)
LEADERBOARD = {  # folder -> (AUC as displayed, Num Rads Below Curve as displayed, per-task counts)
    "sensexdr": ("0.927", 2.6, (3, 3, 2, 3, 2)),  # "SenseXDR (ensemble)", Sep 19 2019
    "ihil": ("0.927", 2.6, (3, 3, 2, 3, 2)),  # "ihil (ensemble) UESTC", Sep 18 2019
    "jfaboy": ("0.926", 3.0, (3, 3, 3, 3, 3)),  # "JF aboy ensemble_V2 JF HEALTHCARE", Jul 31 2019
    "drnet": ("0.926", 2.6, (3, 3, 2, 3, 2)),  # "DRNet (ensemble) UESTC and SenseTime", Sep 16 2019
    "uestc": ("0.924", 2.6, (3, 3, 2, 3, 2)),  # "uestc", Sep 04 2019
    "yww211": ("0.923", 2.4, (1, 3, 3, 3, 2)),  # "YJ&&YWW", Aug 17 2019
}
NOT_ON_LEADERBOARD = ("ngango2", "ngango3", "hieupham", "desmond")  # example folders no entry matches

# The CheXpert paper (Irvin et al., AAAI 2019, arXiv 1901.07031), official valid set, 30-checkpoint
# ensembles: the best uncertainty policy per competition task with its AUROC, and the DeLong tests
# the paper reports. Its full per-policy table is not on record here.
CHEXPERT_PAPER_SOURCE = "CheXpert paper (Irvin et al., AAAI 2019, arXiv 1901.07031), official valid set"
CHEXPERT_PAPER_POLICIES = {  # task -> (best policy, its AUROC, what the paper tested)
    "Atelectasis": ("U-Ones", 0.858, "U-Ones > U-Zeros, DeLong p = 0.03"),
    "Cardiomegaly": ("U-MultiClass", 0.854, "U-MultiClass > U-Ignore, DeLong p < 0.01"),
    "Consolidation": ("U-SelfTrained", 0.939, ""),
    "Edema": ("U-Ones", 0.941, ""),
    "Pleural Effusion": ("U-MultiClass", 0.936, ""),
}
