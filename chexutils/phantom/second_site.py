"""A phantom second hospital in the MIMIC-CXR-JPG layout, with one documented shift of the image "look".

``generate_second_site(out, shift=..., ...)`` writes ``out/mimic-cxr-jpg/`` exactly as ``data/mimic.py``
reads the release: ``files/p1X/p<subject_id>/s<study_id>/<dicom_id>.jpg`` plus
``mimic-cxr-2.0.0-split.csv.gz``, ``-metadata.csv.gz`` and ``-chexpert.csv.gz`` (gzip, released headers,
labels 1.0 / 0.0 / -1.0 / blank), beside the same truth sidecars as the CheXpert phantom
(``phantom_truth.json`` / ``phantom_truth.csv``, the study key being the reader's ``p<subject>/s<study>``)
and ``patients.csv.gz`` (``subject_id``, ``gender``, ``anchor_age``: the columns of MIMIC-IV's
``hosp/patients.csv.gz``, where real MIMIC-CXR patients' sex and age live).

The other hospital differs from site 1 (``generate.generate_phantom``) in:

- its own patients (subject ids from 10,000,000; none shared with site 1) and official split by patient;
- its label rates: every finding's clear / faint / mimic rates times ``PREVALENCE`` (a sicker,
  inpatient-heavy hospital; the report model and the labeler's No Finding rule are site 1's);
- its view mix: ``AP_SHARE`` of frontal films are AP (bedside), against CheXpert's measured share;
- its image look, set by ONE number ``shift`` >= 0 (0 = exactly site 1's look: the pixels are the
  renderer's own). With ``s = shift`` each image is post-processed (``apply_look``):

  * exposure curve: ``x -> LIFT*s + (1 - LIFT*s) * x ** (1 + GAMMA*s)`` on x in [0, 1] (a flatter,
    darker film);
  * noise: gaussian pixel noise of SD ``NOISE*s`` (in units of the full range);
  * positioning: a random rotation of up to ``ROTATE*s`` degrees and a shift of up to ``TRANSLATE*s``
    of the width / height (patients positioned less consistently);
  * text markers: with probability ``min(1, s)`` a bright burnt-in marker block (the side letter and
    a site label, ``MARKER`` of the width) in a random top corner.

A planted subgroup effect, OFF by default (``subgroup_effect=None``): ``{"age_above": 65, "fade": 0.5}``
draws every sign of a study whose patient is older than ``age_above`` at ``fade`` times its severity
(the truth is unchanged: the same disease, harder to see). It is recorded in the sidecar
(``phantom_truth.json``'s ``subgroup_effect``; ``phantom_truth.csv``'s ``age`` and ``faded`` per study), so the
subgroup analysis (``evaluation/subgroups``) can be checked against it.
"""

import functools
import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from chexutils.core.errors import DataError
from chexutils.core.io import atomic_path, write_json, write_table
from chexutils.core.labels import OBSERVATIONS
from chexutils.data import mimic
from chexutils.phantom import expected
from chexutils.phantom import label_model as lm
from chexutils.phantom.layout import sample_layout
from chexutils.phantom.render import render_image
from chexutils.phantom.sidecar import SIDECAR_VERSION, TRUTH_CSV, TRUTH_JSON

SITE_FOLDER = "mimic-cxr-jpg"  # data/mimic.py's DEFAULT_ROOT's last part
PATIENTS_CSV = "patients.csv.gz"  # MIMIC-IV hosp/patients.csv.gz's columns (subject_id, gender, anchor_age)
SUBJECT_BASE = 10_000_000  # subject ids 10000001...: the release's p10 folder
STUDY_BASE = 50_000_000
PREVALENCE = 1.3  # the second hospital's finding rates, relative to site 1's
AP_SHARE = 0.7  # share of AP among its frontal films
LIFT, GAMMA, NOISE, ROTATE, TRANSLATE, MARKER = 0.25, 0.8, 0.06, 8.0, 0.08, 0.22  # the look at shift 1
JPEG_QUALITY = 92
SITE_SEED = 24  # mixed into every image seed, so site 2 never reuses site 1's streams
IN_PROGRESS = "phantom_incomplete"


def site_models(prevalence: float = PREVALENCE) -> dict:
    """Site 1's observation models with the finding rates scaled by ``prevalence`` (capped to stay a probability)."""
    models = lm.observation_models()
    out = {}
    for obs, m in models.items():
        total = m.clear + m.faint + m.mimic
        factor = min(prevalence, 0.9 / total) if total > 0 else prevalence
        out[obs] = replace(m, clear=m.clear * factor, faint=m.faint * factor, mimic=m.mimic * factor)
    return out


def generate_second_site(
    out,
    patients: int = 300,
    validate_patients: int = 30,
    test_patients: int = 150,
    size=(64, 64),
    seed: int = 0,
    shift: float = 0.0,
    subgroup_effect: dict | None = None,
    workers: int | None = 1,
    label_noise: str = "hand-set",
) -> Path:
    """Write (or reuse, when complete with the same parameters) the second site under ``out/mimic-cxr-jpg``.

    ``patients`` / ``validate_patients`` / ``test_patients``: patients per official split (``train`` /
    ``validate`` / ``test``). ``shift`` >= 0: the look (module docstring; 0 = site 1's). Returns the root
    to pass to ``read_dataset("mimic-cxr-jpg", root)``.
    """
    if not np.isfinite(shift) or shift < 0:
        raise ValueError(f"shift must be a number >= 0 (0 = site 1's look), got {shift!r}")
    effect = _checked_effect(subgroup_effect)
    if min(patients, validate_patients, test_patients) < 1 or min(size) < 32:
        raise ValueError("need at least one patient per split and size >= 32x32")
    root = Path(out) / SITE_FOLDER
    params = {
        "site": 2,
        "patients": int(patients),
        "validate_patients": int(validate_patients),
        "test_patients": int(test_patients),
        "size": [int(size[0]), int(size[1])],
        "seed": int(seed),
        "shift": float(shift),
        "subgroup_effect": effect,
        "label_noise": label_noise,
        "prevalence": PREVALENCE,
        "ap_share": AP_SHARE,
    }
    existing = _existing_params(root)
    if existing is not None:
        if existing == params:
            return root
        raise DataError(
            f"{root / TRUTH_JSON}: a second site with other parameters ({existing}) is already here; "
            f"expected {params} — choose another output folder or delete this one"
        )
    if (root / mimic.SPLIT_CSV).is_file() and not (root / IN_PROGRESS).is_file():
        raise DataError(f"{root / mimic.SPLIT_CSV}: a MIMIC-CXR-JPG release that is not a phantom is here; refusing")
    root.mkdir(parents=True, exist_ok=True)
    (root / IN_PROGRESS).write_text("second site being generated; rerun generate_second_site to finish\n")

    rng = np.random.default_rng([seed, SITE_SEED])
    models = site_models()
    nf_rate = lm.no_finding_mention_rate(models)
    parts, first = [], 1
    for split, n in (("train", patients), ("validate", validate_patients), ("test", test_patients)):
        studies, images = sample_layout(first, n, split, rng)
        first += n
        cats, extra = lm.sample_truth(len(studies), models, rng)
        reports = lm.sample_reports(cats, models, nf_rate, rng, extra["own"], label_noise)
        parts.append(_site_tables(studies, images, cats, extra, reports, rng, effect))
    studies = pd.concat([p[0] for p in parts], ignore_index=True)
    images = pd.concat([p[1] for p in parts], ignore_index=True)
    truth = pd.concat([p[2] for p in parts], ignore_index=True)
    tasks = [
        (str(root / path), signs, mimics, frontal, tuple(size), (seed, SITE_SEED, i), float(shift))
        for i, (path, signs, mimics, frontal) in enumerate(
            zip(images["Path"], images["signs"], images["mimics"], images["frontal"], strict=True)
        )
    ]
    _render_all(tasks, workers)
    _write_release(root, studies, images)
    write_table(truth.round(4), root / TRUTH_CSV, index=False)
    write_json(root / TRUTH_JSON, _summary(params, models, label_noise))
    (root / IN_PROGRESS).unlink()
    return root


def _checked_effect(effect) -> dict | None:
    if effect is None:
        return None
    if set(effect) != {"age_above", "fade"} or not 0.0 < float(effect["fade"]) <= 1.0:
        raise ValueError(f"subgroup_effect must be None or {{'age_above': years, 'fade': (0, 1]}}, got {effect!r}")
    return {"age_above": float(effect["age_above"]), "fade": float(effect["fade"])}


def _existing_params(root: Path):
    path = root / TRUTH_JSON
    if not path.is_file() or (root / IN_PROGRESS).is_file() or not (root / mimic.SPLIT_CSV).is_file():
        return None
    return json.loads(path.read_text())["params"]


def _site_tables(studies, images, cats, extra, reports, rng, effect):
    """(study rows, image rows with what to draw, truth rows) of one official split."""
    number = studies["patient"].str.removeprefix("patient").astype(int).to_numpy()
    subject = SUBJECT_BASE + number
    study_id = STUDY_BASE + subject % 1_000_000 * 30 + studies["study_num"].to_numpy()
    faded = np.zeros(len(studies), bool) if effect is None else studies["Age"].to_numpy() > effect["age_above"]
    fade = 1.0 if effect is None else effect["fade"]
    st = pd.DataFrame(
        {
            "subject_id": subject,
            "study_id": study_id,
            "split": studies["folder"].to_numpy(),
            "Sex": studies["Sex"].to_numpy(),
            "Age": studies["Age"].to_numpy(),
        }
    )
    for obs in OBSERVATIONS:
        st[obs] = reports[obs].to_numpy()
    st["study"] = [f"p{a}/s{b}" for a, b in zip(subject, study_id, strict=True)]
    rows = images["study_row"].to_numpy()
    frontal = images["frontal"].to_numpy()
    ap = rng.random(len(rows)) < AP_SHARE
    view = np.where(frontal, np.where(ap, "AP", "PA"), np.where(rng.random(len(rows)) < 0.9, "LATERAL", "LL"))
    words = rng.integers(0, 2**32, size=(len(rows), 5), dtype=np.uint64)
    dicom = ["-".join(f"{int(w):08x}" for w in row) for row in words]
    own, sev = extra["own"], extra["severity"]
    signs, mimics = [], []
    for r in rows:
        scale = fade if faded[r] else 1.0
        signs.append({o: float(sev[o][r]) * scale for o in own if own[o][r] in (lm.CLEAR, lm.FAINT)})
        mimics.append({o: float(sev[o][r]) * scale for o in cats if cats[o][r] == lm.MIMIC})
    im = pd.DataFrame(
        {
            "dicom_id": dicom,
            "subject_id": subject[rows],
            "study_id": study_id[rows],
            "split": st["split"].to_numpy()[rows],
            "ViewPosition": view,
            "frontal": frontal,
            "signs": signs,
            "mimics": mimics,
        }
    )
    im["Path"] = [mimic.image_path(a, b, d) for a, b, d in zip(im["subject_id"], im["study_id"], im["dicom_id"])]
    truth = {"study": st["study"].to_numpy(), "folder": st["split"].to_numpy(), "age": st["Age"].to_numpy()}
    truth["faded"] = faded.astype(int)
    true = lm.truth_labels(cats)
    for obs in OBSERVATIONS:
        truth[f"{obs}|truth"] = true[obs].to_numpy()
        if obs in cats:
            truth[f"{obs}|category"] = np.array(lm.CATEGORIES)[cats[obs]]
            truth[f"{obs}|severity"] = sev[obs]
    return st, im, pd.DataFrame(truth)


def apply_look(pixels: np.ndarray, shift: float, rng: np.random.Generator) -> np.ndarray:
    """The second site's look at ``shift`` (module docstring) on a uint8 image; ``shift`` 0 returns it unchanged."""
    if shift == 0:
        return pixels
    s = float(shift)
    h, w = pixels.shape
    img = Image.fromarray(pixels, mode="L")
    angle = rng.uniform(-ROTATE, ROTATE) * s
    dx, dy = rng.uniform(-TRANSLATE, TRANSLATE, 2) * s * np.array([w, h])
    img = img.rotate(angle, resample=Image.BILINEAR, translate=(float(dx), float(dy)), fillcolor=0)
    if rng.random() < min(1.0, s):
        draw = ImageDraw.Draw(img)
        side = max(4, round(MARKER * w))
        x0 = 1 if rng.random() < 0.5 else w - side - 1
        draw.rectangle((x0, 1, x0 + side, 1 + side // 2), fill=235)
        draw.line((x0 + 2, 3, x0 + 2, side // 2 - 1), fill=40, width=max(1, side // 10))  # the side letter
    x = np.asarray(img, np.float32) / 255.0
    lift = min(LIFT * s, 0.9)
    x = lift + (1.0 - lift) * x ** (1.0 + GAMMA * s)
    x += NOISE * s * rng.standard_normal(x.shape, dtype=np.float32)
    return (np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _render_one(task) -> None:
    path, signs, mimics, frontal, size, seed, shift = task
    rng = np.random.default_rng(seed)
    pixels = render_image(signs, mimics, frontal=frontal, size=size, rng=rng)
    pixels = apply_look(pixels, shift, np.random.default_rng([*seed, 1]))
    with atomic_path(path) as tmp:
        Image.fromarray(pixels, mode="L").save(tmp, format="JPEG", quality=JPEG_QUALITY)


def _render_all(tasks: list, workers: int | None) -> None:
    workers = workers or os.cpu_count() or 1
    if workers == 1 or len(tasks) < 400:
        for task in tasks:
            _render_one(task)
        return
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(functools.partial(_render_one), tasks, chunksize=64))


def _write_release(root: Path, studies: pd.DataFrame, images: pd.DataFrame) -> None:
    """The three released CSVs (gzip, released headers and value spelling) and MIMIC-IV's patients file."""
    split = images[list(mimic.SPLIT_COLUMNS)]
    meta = pd.DataFrame({c: "" for c in mimic.METADATA_COLUMNS}, index=images.index)
    for column in ("dicom_id", "subject_id", "study_id", "ViewPosition"):
        meta[column] = images[column]
    meta["Rows"], meta["Columns"] = 3056, 2544
    meta["PerformedProcedureStepDescription"] = "CHEST (PHANTOM SITE 2)"
    labels = studies[["subject_id", "study_id", *sorted(OBSERVATIONS)]]
    patients = studies.drop_duplicates("subject_id").rename(columns={"Sex": "gender", "Age": "anchor_age"})
    patients = patients.assign(gender=patients["gender"].str[0])[["subject_id", "gender", "anchor_age"]]
    for frame, name in ((split, mimic.SPLIT_CSV), (meta, mimic.METADATA_CSV), (labels, mimic.LABELS_CSV)):
        write_table(frame, root / name, index=False, compression="gzip", float_format="%.1f")
    write_table(patients, root / PATIENTS_CSV, index=False, compression="gzip")


def _summary(params: dict, models: dict, label_noise: str) -> dict:
    return {
        "params": params,
        "sidecar_version": SIDECAR_VERSION,
        **expected.summary(expected.expected_answer(models, label_noise=label_noise)),
        "planted_q": lm.PLANTED_Q,
        "label_noise": label_noise,
        "subgroup_effect": params["subgroup_effect"],
        "look": {
            "shift": params["shift"],
            "lift": LIFT,
            "gamma": GAMMA,
            "noise": NOISE,
            "rotate_deg": ROTATE,
            "translate": TRANSLATE,
            "marker": MARKER,
        },  # fmt: skip
        "truth_csv": TRUTH_CSV,
        "doc": "The phantom's second site (chexutils/phantom/second_site.py): MIMIC-CXR-JPG layout, its own patients, "
        "finding rates x prevalence, AP share ap_share, and the look set by shift (0 = site 1's pixels). "
        "subgroup_effect: signs drawn at fade x severity where the patient is older than age_above (truth unchanged); "
        "phantom_truth.csv's 'faded' marks those studies. Report labels as site 1's train.csv (label_noise).",
    }
