"""Write a phantom CheXpert: the real folder layout and CSV schema, images whose pixels carry the
findings, a sidecar with the planted truth that the CSVs do not reveal, and one with where each
sign was drawn (``phantom_regions.json``, see ``regions``)."""

import functools
import json
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from chexutils.core.errors import DataError
from chexutils.core.io import write_json, write_table
from chexutils.core.labels import OBSERVATIONS
from chexutils.core.paths import SMALL_PREFIX
from chexutils.data.chexpert import write_chexpert_csv
from chexutils.phantom import expected, measured_noise
from chexutils.phantom import label_model as lm
from chexutils.phantom.layout import image_rows, sample_layout
from chexutils.phantom.regions import REGIONS_JSON, encode_mask, write_regions
from chexutils.phantom.render import MIMIC_STYLES, REGION_FRACTION, render_image
from chexutils.phantom.sidecar import SIDECAR_VERSION, TRUTH_CSV, TRUTH_JSON
from chexutils.phantom.simulated_test import write_test_set

IN_PROGRESS = "phantom_incomplete"  # present while generating: a later call may overwrite
JPEG_QUALITY = 92
DEFAULT_SIZE = (128, 104)  # (W, H); the real small release is about 390x320
BEFORE_MIMIC_OPTION = {"mimics": "look-alike"}  # how phantoms written before the option were drawn
# The truth model: 2 = a parent positive only through faint children is faint (not clear), No Finding by
# the labeler's rule (label_model); phantoms written before it (1) are refused, not silently reused.
TRUTH_MODEL = 2
BEFORE_TRUTH_MODEL = {"truth_model": 1, "label_noise": "hand-set"}
DEFAULT_LABEL_NOISE = "hand-set"  # keeps the demo's and the phantom study's figures comparable with earlier runs


def generate_phantom(
    out,
    patients: int = 500,
    valid_patients: int = 100,
    size=DEFAULT_SIZE,
    seed: int = 0,
    workers: int | None = None,
    test_patients: int = 0,
    mimics: str = "faint-sign",
    label_noise: str = DEFAULT_LABEL_NOISE,
) -> Path:
    """Generate (or reuse, when already complete with the same parameters) a phantom CheXpert.

    Returns the CheXpert folder ``out/CheXpert-v1.0-small``. Images are written first and the CSVs
    last, so an interrupted run leaves no CSV and is simply redone by the next call.
    ``test_patients`` > 0 also writes the official test set (``phantom/testset.py``) beside it; it is
    added to an existing phantom without touching train and valid. ``mimics`` is how a truly negative
    equivocal study is drawn (``render.MIMIC_STYLES``): "faint-sign" (the default: the finding's own sign
    at faint strength, so faint and mimic look alike by construction, as the expected answer assumes)
    or "look-alike" (a hand-made look-alike a network may learn to tell apart; phantoms before this
    option were drawn so). ``label_noise`` is how train.csv's report labels are drawn given the truth
    (``label_model.LABEL_NOISES``): "hand-set" (the default, so the demo's and the phantom study's figures
    stay comparable with earlier runs: planted q, an equivocal zone, rates like the real train.csv) or
    "measured" (CheXpert's measured P(report label | truth) from the public test set,
    ``measured_noise``); the sidecar's expected answer is derived for the noise used.
    """
    if mimics not in MIMIC_STYLES:
        raise ValueError(f"mimics must be one of {MIMIC_STYLES}, got {mimics!r}")
    if label_noise not in lm.LABEL_NOISES:
        raise ValueError(f"label_noise must be one of {lm.LABEL_NOISES}, got {label_noise!r}")
    root = Path(out) / SMALL_PREFIX
    params = {
        "patients": int(patients),
        "valid_patients": int(valid_patients),
        "size": [int(size[0]), int(size[1])],
        "seed": int(seed),
        "mimics": mimics,
        "label_noise": label_noise,
        "truth_model": TRUTH_MODEL,
    }
    if test_patients:
        params["test_patients"] = int(test_patients)
    existing = _existing_params(root)
    if existing is not None:
        same = _without_test(existing) == _without_test(params)  # a test set is added, or kept when not asked for
        if same and (root / REGIONS_JSON).is_file():
            _refresh_summary(root)
            if test_patients and existing.get("test_patients") != params["test_patients"]:
                _add_test_set(root, params, workers)
            return root
        if not same:
            raise DataError(
                f"{root / TRUTH_JSON}: a phantom with other parameters ({existing}) is already here; "
                f"expected {params} — choose another output folder or delete this one"
            )
        # else: an older phantom without the regions sidecar; redrawn below (same seed, same pixels)
    if patients < 1 or valid_patients < 1 or min(size) < 32:
        raise ValueError(f"need patients >= 1, valid_patients >= 1 and size >= 32x32; got {params}")
    if existing is None and (root / "train.csv").is_file() and not (root / IN_PROGRESS).is_file():
        raise DataError(
            f"{root / 'train.csv'}: a CheXpert CSV that is not a phantom is already here; "
            "refusing to overwrite it — choose another output folder"
        )
    root.mkdir(parents=True, exist_ok=True)
    (root / IN_PROGRESS).write_text("phantom generation started; rerun generate_phantom to finish\n")

    rng = np.random.default_rng(seed)
    models = lm.observation_models()
    nf_rate = lm.no_finding_mention_rate(models)
    train_studies, train_images = sample_layout(1, patients, "train", rng)
    valid_studies, valid_images = sample_layout(patients + 1, valid_patients, "valid", rng, one_study=True)
    train_cats, train_extra = lm.sample_truth(len(train_studies), models, rng)
    valid_cats, valid_extra = lm.sample_truth(len(valid_studies), models, rng)
    train_labels = lm.sample_reports(train_cats, models, nf_rate, rng, train_extra["own"], label_noise)
    valid_labels = lm.truth_labels(valid_cats)

    train = image_rows(train_studies, train_images, train_labels, f"{SMALL_PREFIX}/")
    valid = image_rows(valid_studies, valid_images, valid_labels, f"{SMALL_PREFIX}/")
    tasks = _render_tasks(train, train_images, train_cats, train_extra, root.parent, size, seed, 0) + _render_tasks(
        valid, valid_images, valid_cats, valid_extra, root.parent, size, seed, len(train)
    )
    regions = dict(_render_all(tasks, workers, mimics))
    if test_patients:
        write_test_set(
            root.parent,
            patients + valid_patients + 1,
            test_patients,
            models,
            size,
            seed,
            lambda tasks: _render_all(tasks, workers, mimics),
            _render_tasks,
            mimics,
        )

    truth = pd.concat(
        [_truth_rows(train_studies, train_cats, train_extra), _truth_rows(valid_studies, valid_cats, valid_extra)],
        ignore_index=True,
    )
    write_table(truth.round(4), root / TRUTH_CSV, index=False)
    write_regions(root / REGIONS_JSON, {p: r for p, r in regions.items() if r}, REGION_FRACTION)
    write_chexpert_csv(valid, root / "valid.csv")
    write_chexpert_csv(train, root / "train.csv")
    write_json(root / TRUTH_JSON, _truth_summary(params, models, nf_rate))
    (root / IN_PROGRESS).unlink()
    return root


def _without_test(params: dict) -> dict:
    return {k: v for k, v in params.items() if k != "test_patients"}


def _add_test_set(root: Path, params: dict, workers: int | None) -> None:
    """Write (or rewrite) only the test set of a complete phantom, then record it in its parameters."""
    (root / IN_PROGRESS).write_text("phantom test set being added; rerun generate_phantom to finish\n")
    first = params["patients"] + params["valid_patients"] + 1
    write_test_set(
        root.parent,
        first,
        params["test_patients"],
        lm.observation_models(),
        tuple(params["size"]),
        params["seed"],
        lambda tasks: _render_all(tasks, workers, params["mimics"]),
        _render_tasks,
        params["mimics"],
    )
    summary = json.loads((root / TRUTH_JSON).read_text())
    write_json(root / TRUTH_JSON, summary | {"params": params})
    (root / IN_PROGRESS).unlink()


def _existing_params(root: Path):
    path = root / TRUTH_JSON
    if not (path.is_file() and (root / "train.csv").is_file()) or (root / IN_PROGRESS).is_file():
        return None
    params = json.loads(path.read_text())["params"]
    return BEFORE_MIMIC_OPTION | BEFORE_TRUTH_MODEL | params


def _refresh_summary(root: Path) -> None:
    """Rewrite an older sidecar's summary (same data, same label model: only the derived answer is new)."""
    record = json.loads((root / TRUTH_JSON).read_text())
    if record.get("sidecar_version", 1) < SIDECAR_VERSION:
        models = lm.observation_models()
        params = BEFORE_MIMIC_OPTION | BEFORE_TRUTH_MODEL | record["params"]
        write_json(root / TRUTH_JSON, _truth_summary(params, models, lm.no_finding_mention_rate(models)))


def _render_tasks(rows, images, cats, extra, base: Path, size, seed: int, offset: int) -> list:
    """Arguments for each image: what to draw (own signs and mimics), a per-image seed, the CSV Path
    and each drawn finding's kind (clear / faint / mimic) for the region record."""
    own, sev = extra["own"], extra["severity"]
    tasks = []
    for i, (path, study_row, frontal) in enumerate(zip(rows["Path"], images["study_row"], images["frontal"])):
        signs = {o: float(sev[o][study_row]) for o in own if own[o][study_row] in (lm.CLEAR, lm.FAINT)}
        mimics = {o: float(sev[o][study_row]) for o in cats if cats[o][study_row] == lm.MIMIC}
        kinds = {o: lm.CATEGORIES[own[o][study_row]] for o in signs}
        kinds.update({o: "mimic" for o in mimics})
        tasks.append((str(base / path), signs, mimics, bool(frontal), tuple(size), (seed, offset + i), path, kinds))
    return tasks


def _render_one(task, mimic_style: str) -> tuple[str, dict]:
    """Draw and save one image; returns its CSV Path and its encoded regions per observation."""
    path, signs, mimics, frontal, size, seed, csv_path, kinds = task
    drawn = {}
    rng = np.random.default_rng(seed)
    pixels = render_image(signs, mimics, frontal=frontal, size=size, rng=rng, regions=drawn, mimic_style=mimic_style)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(pixels, mode="L").save(path, quality=JPEG_QUALITY)
    regions = {}
    for (obs, _), mask in drawn.items():  # a finding has a sign or a mimic, never both
        regions[obs] = {"kind": kinds[obs], **encode_mask(mask)}
    return csv_path, regions


def _render_all(tasks: list, workers: int | None, mimic_style: str) -> list[tuple[str, dict]]:
    workers = workers or os.cpu_count() or 1
    draw = functools.partial(_render_one, mimic_style=mimic_style)
    if workers == 1 or len(tasks) < 400:
        return [draw(task) for task in tqdm(tasks, desc="phantom images", unit="img", mininterval=1)]
    with ProcessPoolExecutor(workers) as pool:
        return list(
            tqdm(
                pool.map(draw, tasks, chunksize=64),
                total=len(tasks),
                desc="phantom images",
                unit="img",
                mininterval=1,
            )
        )


def _truth_rows(studies: pd.DataFrame, cats, extra) -> pd.DataFrame:
    """Per study: true finding (0/1), latent category and severity per observation."""
    truth = lm.truth_labels(cats)
    out = {"study": studies["study"].to_numpy(), "folder": studies["folder"].to_numpy()}
    for obs in OBSERVATIONS:
        out[f"{obs}|truth"] = truth[obs].to_numpy()
        if obs in cats:
            out[f"{obs}|category"] = np.array(lm.CATEGORIES)[cats[obs]]
            out[f"{obs}|severity"] = extra["severity"][obs]
    return pd.DataFrame(out)


def _truth_summary(params: dict, models: dict, nf_rate: float) -> dict:
    return {
        "params": params,
        "sidecar_version": SIDECAR_VERSION,
        **expected.summary(expected.expected_answer(models, label_noise=params.get("label_noise", "hand-set"))),
        "planted_q": lm.PLANTED_Q,
        "zone": {
            "uncertain": lm.ZONE_UNCERTAIN,
            "reader_accuracy": lm.ZONE_READER_ACCURACY,
            "severity_ranges": {lm.CATEGORIES[k]: v for k, v in lm.SEVERITY_RANGES.items()},
        },
        "no_finding_mention_rate": nf_rate,
        "label_noise": params.get("label_noise", "hand-set"),
        "measured_noise": measured_noise.read_counts().to_dict("records")
        if params.get("label_noise") == "measured"
        else None,
        "observation_models": {o: vars(m) for o, m in models.items()},
        "truth_csv": TRUTH_CSV,
        "doc": "planted_q[obs] = P(an uncertain label is truly positive). Uncertain labels come only from "
        "equivocal studies: 'faint' (truly positive, faint sign) or 'mimic' (truly negative, drawn as params.mimics "
        "says). "
        "phantom_truth.csv holds per study the truth (0/1), category and severity per observation. "
        "expected_better_policy is derived from the generative model (chexutils.phantom.expected; see "
        "'rule'), not from q: q > 0.5 does not decide which policy scores the higher AUROC. It assumes a "
        "learner that cannot tell faint from mimic: params.mimics 'faint-sign' draws a mimic as the finding's "
        "own sign at faint strength, so this holds by construction; with 'look-alike' it may not "
        "(notebook 07's per-kind scores check it). label_noise 'hand-set': report labels from planted q and the "
        "equivocal zone; 'measured': each study's report label drawn given its truth from CheXpert's measured "
        "rates (measured_noise: counts from the public test set, rajpurkarlab/cheXpert-test-set-labels a03eb34). "
        "truth_model 2: a parent truly positive only through faint child signs is 'faint' (reported blank under "
        "hand-set noise), No Finding = 1 only where no pathology is labelled positive or uncertain.",
    }
