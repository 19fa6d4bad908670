"""The phantom records where it drew each sign: RLE format, region placement, sidecar and reader."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from chexutils.core.errors import DataError
from chexutils.data.chexpert import read_image
from chexutils.phantom import REGIONS_JSON, decode_mask, encode_mask, read_regions
from chexutils.phantom.generate import generate_phantom
from chexutils.phantom.render import render_image


def test_rle_is_coco_uncompressed_column_major():
    mask = np.array([[0, 1, 1], [0, 1, 0]], bool)  # column-major: 0 0 | 1 1 | 1 0
    assert encode_mask(mask) == {"size": [2, 3], "counts": [2, 3, 1]}
    starts_set = np.array([[1, 0], [1, 0]], bool)  # a leading run of 1s gets an empty 0-run first
    assert encode_mask(starts_set)["counts"] == [0, 2, 2]
    rng = np.random.default_rng(0)
    for shape in [(1, 1), (5, 7), (52, 64)]:
        for density in (0.0, 0.3, 1.0):
            m = rng.random(shape) < density
            assert np.array_equal(decode_mask(encode_mask(m)), m)
    with pytest.raises(ValueError, match="sum"):
        decode_mask({"size": [2, 2], "counts": [1, 2]})


@pytest.mark.parametrize("name", ["Pleural Effusion", "Support Devices", "Cardiomegaly", "Atelectasis"])
@pytest.mark.parametrize("kind", ["sign", "mimic"])
def test_region_is_where_the_sign_changed_the_pixels(name, kind):
    """Same seed with and without the finding: the pixels that differ most lie in its region."""
    other = {}  # no other sign: a geometric one would move anatomy-anchored signs too
    signs = {name: 0.8} if kind == "sign" else {}
    mimics = {name: 0.3} if kind == "mimic" else {}
    regions = {}
    with_it = render_image(signs, mimics, frontal=True, size=(96, 80), rng=np.random.default_rng(7), regions=regions)
    plain = render_image(signs, mimics, frontal=True, size=(96, 80), rng=np.random.default_rng(7))
    without = render_image(other, {}, frontal=True, size=(96, 80), rng=np.random.default_rng(7))
    assert np.array_equal(with_it, plain)  # recording regions does not change the image
    region = regions[(name, kind)]
    assert set(regions) == {(name, kind)}
    diff = np.abs(with_it.astype(int) - without.astype(int))
    strong = diff >= 0.5 * diff.max()
    assert 0 < region.mean() < 0.5
    assert (strong & region).sum() >= 0.8 * strong.sum()


def test_every_drawn_finding_gets_its_own_region_on_lateral_views_too():
    regions = {}
    signs = {"Pneumothorax": 0.9, "Lung Lesion": 0.8}
    render_image(signs, {"Fracture": 0.3}, frontal=False, size=(64, 52), rng=np.random.default_rng(1), regions=regions)
    assert set(regions) == {("Pneumothorax", "sign"), ("Lung Lesion", "sign"), ("Fracture", "mimic")}
    assert all(m.shape == (52, 64) and m.any() for m in regions.values())
    assert not (regions[("Pneumothorax", "sign")] & regions[("Lung Lesion", "sign")]).all()


def test_phantom_sidecar_matches_the_planted_truth(tiny_phantom):
    regions = read_regions(tiny_phantom)
    table = regions.table()
    assert set(table["kind"]) <= {"clear", "faint", "mimic"} and len(table) > 20
    train = pd.read_csv(tiny_phantom / "train.csv")
    valid = pd.read_csv(tiny_phantom / "valid.csv")
    paths = pd.concat([train["Path"], valid["Path"]])
    assert set(table["Path"]) <= set(paths)
    truth = pd.read_csv(tiny_phantom / "phantom_truth.csv").set_index("study")
    study = table["Path"].str.split("/").str[2:4].str.join("/")
    for row, st in zip(table.itertuples(), study):
        assert truth.loc[st, f"{row.observation}|category"] == row.kind  # the drawn kind is the latent one
    shapes = {tuple(read_image(tiny_phantom.parent / p).shape) for p in table["Path"].iloc[:5]}
    assert shapes == {(int(table["height"].iloc[0]), int(table["width"].iloc[0]))}
    # every leaf observation (no children) with a latent sign or mimic has a drawn region
    leaf = "Pleural Effusion"
    expected = {p for p in paths if truth.loc["/".join(p.split("/")[2:4]), f"{leaf}|category"] != "none"}
    assert set(table.loc[table["observation"] == leaf, "Path"]) == expected
    first = table.iloc[0]
    mask = regions.mask(first["Path"], first["observation"])
    assert mask.sum() == first["area"] and regions.kind(first["Path"], first["observation"]) == first["kind"]
    assert regions.mask(first["Path"], "No Finding") is None


def test_reader_names_the_file_when_missing_or_foreign(tmp_path):
    with pytest.raises(DataError, match=REGIONS_JSON + ".*does not exist"):
        read_regions(tmp_path)
    (tmp_path / REGIONS_JSON).write_text(json.dumps({"format": "other"}))
    with pytest.raises(DataError, match="expected 'chexutils-phantom-regions/1'"):
        read_regions(tmp_path)
    (tmp_path / REGIONS_JSON).write_text("{")
    with pytest.raises(DataError, match="line 1"):
        read_regions(tmp_path)


def test_an_older_phantom_without_regions_gets_them_with_the_same_pixels(tmp_path):
    root = generate_phantom(tmp_path, patients=3, valid_patients=2, size=(48, 40), seed=1, workers=1)
    first = read_regions(root).images
    image = root.parent / pd.read_csv(root / "train.csv")["Path"].iloc[0]
    before = read_image(image)
    (root / REGIONS_JSON).unlink()
    assert generate_phantom(tmp_path, patients=3, valid_patients=2, size=(48, 40), seed=1, workers=1) == root
    assert read_regions(root).images == first
    assert np.array_equal(read_image(image), before)
    shutil.rmtree(root)
