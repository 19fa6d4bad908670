"""CheXpert observations, label value semantics and the observation hierarchy.

Observations are always addressed by name, never by column position.
"""

import math

import numpy as np

OBSERVATIONS: tuple[str, ...] = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)

# The five tasks of the CheXpert competition (Irvin et al. 2019), in alphabetical order.
COMPETITION_TASKS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Pleural Effusion",
)

# Value semantics of the label columns. BLANK ("not mentioned" in the report) is read as NaN.
POSITIVE = 1.0
NEGATIVE = 0.0
UNCERTAIN = -1.0
BLANK = math.nan
LABEL_VALUES = {POSITIVE: "positive", NEGATIVE: "negative", UNCERTAIN: "uncertain"}

# Parent -> children. A child finding implies its parent (a consolidation is a lung opacity).
HIERARCHY: dict[str, tuple[str, ...]] = {
    "Lung Opacity": ("Lung Lesion", "Edema", "Consolidation", "Pneumonia", "Atelectasis"),
    "Enlarged Cardiomediastinum": ("Cardiomegaly",),
}
PARENT: dict[str, str] = {child: parent for parent, kids in HIERARCHY.items() for child in kids}

# Observations that are not pathologies: "No Finding" means none of the pathologies is present
# (support devices may be), and support devices are not a disease.
NON_PATHOLOGIES = ("No Finding", "Support Devices")
PATHOLOGIES: tuple[str, ...] = tuple(o for o in OBSERVATIONS if o not in NON_PATHOLOGIES)


# The two output heads a policy can ask for: one logit per observation, or three classes whose
# index means MULTICLASS_CLASSES[index] (U-MultiClass; its probability of a finding is p1 / (p0 + p1)).
BINARY, MULTICLASS = "binary", "multiclass"
HEADS: tuple[str, ...] = (BINARY, MULTICLASS)
MULTICLASS_CLASSES: tuple[str, ...] = ("negative", "positive", "uncertain")


def check_head(head: str) -> str:
    """Return ``head`` if it is one of HEADS, else fail naming the choices."""
    if head not in HEADS:
        raise ValueError(f"unknown head {head!r}; expected one of {', '.join(HEADS)}")
    return head


def certain_only(values) -> tuple[np.ndarray, np.ndarray]:
    """(labels, keep): blank read as negative, uncertain entries left out (keep False, label 0).

    The one definition of "scored on certain labels" used by training's selection loss and metrics.
    """
    labels = np.nan_to_num(np.asarray(values, dtype=float), nan=NEGATIVE)
    keep = labels != UNCERTAIN
    return np.where(keep, labels, NEGATIVE), keep


def check_observation(name: str) -> str:
    """Return ``name`` if it is a CheXpert observation, else fail with the list of known ones."""
    if name not in OBSERVATIONS:
        raise KeyError(f"unknown observation {name!r}; known: {', '.join(OBSERVATIONS)}")
    return name


COMPARED_POLICIES = ("U-Zeros", "U-Ones")  # the two arms of the per-label choice and of the phantom's expected answer


def hierarchy_order(parent: dict[str, str] = PARENT, observations=OBSERVATIONS) -> list[str]:
    """The observations that have a parent, each after its own parent (so a chain is resolved top-down)."""
    depth = {}

    def level(name: str, seen=()) -> int:
        if name in seen:
            raise ValueError(f"the hierarchy has a cycle through {name!r}")
        if name not in depth:
            depth[name] = 0 if name not in parent else 1 + level(parent[name], (*seen, name))
        return depth[name]

    return sorted((o for o in observations if o in parent), key=level)


def marginal_from_conditional(probs, observations=OBSERVATIONS, parent: dict[str, str] = PARENT):
    """P(child) = P(child | parent) · P(parent), down the hierarchy (Pham et al. 2020, arXiv:1911.06475,
    "Interpreting chest X-rays via CNNs that exploit hierarchical disease dependencies and uncertainty
    labels", section 3.2: a conditionally trained output is P(child | parent); the product rule makes it
    unconditional). ``probs``: (..., len(observations)) array or tensor whose child columns are conditional
    and whose root columns are unconditional; returns a copy with every column unconditional. A grandchild
    uses its parent's already unconditional probability, so the product runs down the whole chain."""
    out = probs.clone() if hasattr(probs, "clone") else np.array(probs, dtype=float, copy=True)
    column = {name: i for i, name in enumerate(observations)}
    for child in hierarchy_order(parent, observations):
        out[..., column[child]] = probs[..., column[child]] * out[..., column[parent[child]]]
    return out
