"""Performance by subgroup: per sex, age band, view (any grouping column), with counts and honest intervals.

Per group and observation (study level): AUROC with the clustered DeLong logit interval, and sensitivity /
specificity at a given operating point (the threshold chosen elsewhere, ``operating_points.choose_threshold``)
with Wilson intervals, under the small-sample rules of ``scoring.metrics.shown``: no interval below
``CI_MIN_POSITIVES`` in the smaller class (counted in patients), "n/a" below ``POINT_MIN_POSITIVES``; a
rate's interval needs its own denominator at the same floor.

The gap between two groups, AUROC(group) - AUROC(reference), has a z test and interval that account for
patients: each patient's influence on both AUROCs (``stats.auroc_influence``, Obuchowski's clustering)
is summed, so a patient with studies in both groups (an age band crossed between visits, two views) is
one unit, and several studies of one patient are not counted as independent evidence.

Underdiagnosis (Seyyed-Kalantari, Zhang, McDermott, Chen & Ghassemi 2021, "Underdiagnosis bias of
artificial intelligence algorithms applied to chest radiographs in under-served patient populations",
Nature Medicine 27:2176-2182): per group, the share of truly ill studies (No Finding = 0: some finding
present) that the model calls "No Finding" at its No Finding threshold — the false-positive rate of
the No Finding label. Its gap between groups has a patient-clustered z test as well.
"""

import math

import numpy as np
import pandas as pd
from scipy.stats import norm

from chexutils.scoring.metrics import CI_MIN_POSITIVES, NA, POINT_MIN_POSITIVES, metric_text, shown
from chexutils.scoring.stats import auroc_influence, auroc_interval, cluster_counts, holm, wilson_interval

LEVEL = 0.95
AGE_EDGES = (0, 40, 60, 75, 200)  # age bands [0, 40), [40, 60), [60, 75), [75, ...)
NO_FINDING = "No Finding"


def age_band(age, edges=AGE_EDGES) -> np.ndarray:
    """'<40', '40-59', '60-74', '75+' (for the default edges); blank where the age is unknown."""
    age = np.asarray(age, float)
    names = (
        [f"<{edges[1]}"] + [f"{a}-{b - 1}" for a, b in zip(edges[1:-2], edges[2:-1], strict=True)] + [f"{edges[-2]}+"]
    )
    index = np.clip(np.searchsorted(edges, age, side="right") - 1, 0, len(names) - 1)
    return np.where(np.isfinite(age), np.array(names, dtype=object)[index], "")


def study_groups(frame: pd.DataFrame, column: str, edges=AGE_EDGES) -> pd.Series:
    """Study -> its group by ``column``: 'sex' (Sex), 'age band' (Age), 'view' (the study's first frontal view,
    AP / PA, or 'lateral only') or any column of the frame (its first image's value)."""
    first = frame.drop_duplicates("study").set_index("study")
    if column == "sex":
        return first["Sex"].fillna("").astype(str).rename("sex")
    if column == "age band":
        return pd.Series(age_band(first["Age"], edges), index=first.index, name="age band")
    if column == "view":
        position = frame["AP/PA"] if "AP/PA" in frame and "subject_id" not in frame else frame["view"]
        frontal = frame.assign(position=position.astype(str).str.upper())[frame["frontal"].to_numpy()]
        view = frontal.drop_duplicates("study").set_index("study")["position"]
        return view.reindex(first.index).fillna("lateral only").rename("view")
    return first[column].astype(str).rename(column)


def _rank(how: str) -> int:
    """Order of the small-sample labels, worst first: 'n/a', 'few positives' / 'few negatives', 'with CI'."""
    return 0 if how == NA else (2 if how == "with CI" else 1)


def _rate(hits: int, total: int) -> dict:
    how = NA if total < POINT_MIN_POSITIVES else ("with CI" if total >= CI_MIN_POSITIVES else "few")
    low, high = wilson_interval(hits, total, LEVEL) if how == "with CI" else (math.nan, math.nan)
    return {"value": hits / total if how != NA else math.nan, "low": low, "high": high}


def subgroup_table(labels, scores, patients, groups, thresholds=None, observations=None) -> pd.DataFrame:
    """One row per (observation, group): counts, AUROC with its interval and text, sensitivity / specificity.

    ``labels``: study x observation 1 / 0 / NaN (NaN not scored); ``scores``: study x observation;
    ``patients``, ``groups``: study -> patient, study -> group; ``thresholds``: observation -> threshold
    (score >= threshold called positive), None for AUROC only.
    """
    observations = list(observations or labels.columns)
    rows = []
    for obs in observations:
        for group in sorted(pd.unique(groups.reindex(labels.index).dropna())):
            y, s, pts = _group_data(labels, scores, patients, groups, obs, group)
            m, n = int(y.sum()), int((~y).sum())
            pos_pt, neg_pt = cluster_counts(y, pts) if len(y) else (0, 0)
            how = shown(m, n, pos_pt, neg_pt)
            auc = low = high = math.nan
            if min(m, n) >= 1:
                ci = auroc_interval(y, s, pts, LEVEL)
                auc = ci["auroc"] if how != NA else math.nan
                low, high = (ci["ci_low"], ci["ci_high"]) if how == "with CI" else (math.nan, math.nan)
            row = {"observation": obs, "group": group, "studies": len(y), "positives": m, "negatives": n,
                   "patients": len(set(pts)), "auroc": auc, "ci_low": low, "ci_high": high, "shown": how,
                   "text": metric_text(auc, low, high, m, n, len(set(pts)), pos_pt, neg_pt)}  # fmt: skip
            if thresholds is not None and obs in thresholds:
                called = s >= thresholds[obs]
                for name, hits, total in (("sensitivity", called[y].sum(), m), ("specificity", (~called[~y]).sum(), n)):
                    rate = _rate(int(hits), int(total))
                    row |= {name: rate["value"], f"{name}_low": rate["low"], f"{name}_high": rate["high"]}
                row["threshold"] = thresholds[obs]
            rows.append(row)
    return pd.DataFrame(rows)


def _group_data(labels, scores, patients, groups, obs, group):
    index = labels.index[(groups.reindex(labels.index) == group).to_numpy() & labels[obs].notna().to_numpy()]
    s = scores.loc[index, obs].to_numpy(float)
    keep = np.isfinite(s)
    return labels.loc[index, obs].to_numpy(bool)[keep], s[keep], patients.reindex(index).to_numpy()[keep]


def auroc_gap(y, s, patients, in_group, in_reference) -> dict:
    """AUROC(group) - AUROC(reference) with a patient-clustered SE, z test and interval (module docstring)."""
    y, s = np.asarray(y, bool), np.asarray(s, float)
    codes, uniques = pd.factorize(np.asarray(patients))
    n_clusters = len(uniques)
    aucs, psis = [], []
    for mask in (np.asarray(in_group, bool), np.asarray(in_reference, bool)):
        auc, psi = auroc_influence(y[mask], s[mask][None, :], codes[mask], n_clusters)
        aucs.append(float(auc[0]))
        psis.append(psi[0])
    delta = aucs[0] - aucs[1]
    se = math.sqrt(n_clusters / max(n_clusters - 1, 1) * float(np.sum((psis[0] - psis[1]) ** 2)))
    return _z(delta, se) | {"auroc": aucs[0], "reference auroc": aucs[1]}


def _z(delta: float, se: float) -> dict:
    z = norm.ppf((1 + LEVEL) / 2)
    p = float(2 * norm.sf(abs(delta) / se)) if se > 0 else (1.0 if delta == 0 else 0.0)
    return {"gap": delta, "se": se, "ci_low": delta - z * se, "ci_high": delta + z * se, "p_value": p}


def subgroup_gaps(labels, scores, patients, groups, observations=None, reference=None) -> pd.DataFrame:
    """Per observation and group: the AUROC gap to ``reference`` (default: the group with the most studies),
    patient-clustered; Holm's adjustment over the gaps of each observation. No interval, no test below the floors."""
    observations = list(observations or labels.columns)
    study_group = groups.reindex(labels.index)
    reference = reference or study_group.value_counts().idxmax()
    rows = []
    for obs in observations:
        scored = labels[obs].notna() & np.isfinite(scores.loc[labels.index, obs].astype(float))
        index = labels.index[scored.to_numpy()]
        y = labels.loc[index, obs].to_numpy(bool)
        s = scores.loc[index, obs].to_numpy(float)
        pts, grp = patients.reindex(index).to_numpy(), study_group.loc[index].to_numpy()
        part = []
        for group in sorted(set(grp) - {reference}):
            mask, ref = grp == group, grp == reference
            hows = [shown(int(y[k].sum()), int((~y[k]).sum()), *cluster_counts(y[k], pts[k])) for k in (mask, ref)]
            row = {"observation": obs, "group": group, "reference": reference, "shown": min(hows, key=_rank)}
            if all(h == "with CI" for h in hows):
                row |= auroc_gap(y, s, pts, mask, ref)
            else:
                row |= {"gap": math.nan, "note": f"below the floor ({hows[0]} / {hows[1]}): no test"}
            part.append(row)
        p = holm([r.get("p_value", math.nan) for r in part])
        for row, adjusted in zip(part, p, strict=True):
            rows.append(row | {"p_holm": adjusted})
    return pd.DataFrame(rows)


def underdiagnosis(labels, scores, patients, groups, threshold: float, reference=None) -> pd.DataFrame:
    """Per group: truly ill studies (No Finding 0), how many the model calls No Finding (score >= threshold),
    the rate with a Wilson interval, and its gap to ``reference`` with a patient-clustered z test."""
    ill = labels.index[(labels[NO_FINDING] == 0).to_numpy() & np.isfinite(scores.loc[labels.index, NO_FINDING])]
    called = scores.loc[ill, NO_FINDING].to_numpy(float) >= threshold
    grp = groups.reindex(ill).to_numpy()
    codes, uniques = pd.factorize(patients.reindex(ill).to_numpy())
    reference = reference or pd.Series(grp).value_counts().idxmax()

    def influence(mask):
        n = int(mask.sum())
        rate = called[mask].mean() if n else math.nan
        k = np.bincount(codes[mask], called[mask].astype(float), len(uniques))
        return rate, (k - rate * np.bincount(codes[mask], minlength=len(uniques))) / max(n, 1)

    ref_rate, ref_psi = influence(grp == reference)
    rows = []
    for group in sorted(set(grp)):
        mask = grp == group
        total, hits = int(mask.sum()), int(called[mask].sum())
        rate = _rate(hits, total)
        row = {"group": group, "ill studies": total, "called No Finding": hits, "underdiagnosis": rate["value"],
               "ci_low": rate["low"], "ci_high": rate["high"], "threshold": threshold, "reference": reference}  # fmt: skip
        if group != reference and total >= CI_MIN_POSITIVES and (grp == reference).sum() >= CI_MIN_POSITIVES:
            value, psi = influence(mask)
            se = math.sqrt(len(uniques) / max(len(uniques) - 1, 1) * float(np.sum((psi - ref_psi) ** 2)))
            gap = _z(value - ref_rate, se)
            row |= {"gap": gap["gap"], "gap_low": gap["ci_low"], "gap_high": gap["ci_high"], "p_value": gap["p_value"]}
        rows.append(row)
    return pd.DataFrame(rows)
