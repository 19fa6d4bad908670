"""Localisation scores on hand-made heatmaps and regions: IoU, hit, chance and their CIs."""

import numpy as np
import pandas as pd
import pytest
import torch

from chexutils.explain.localise import (
    format_scores,
    localise_images,
    localise_one,
    localise_run,
    normalise,
    peak,
    score_localisation,
    summarise,
)
from chexutils.phantom.regions import Regions, encode_mask


def square(shape, top, left, side):
    mask = np.zeros(shape, bool)
    mask[top : top + side, left : left + side] = True
    return mask


def test_iou_and_hit_by_hand():
    region = square((10, 10), 0, 0, 4)  # 16 pixels
    heat = np.zeros((10, 10), np.float32)
    heat[2:6, 2:6] = 1.0  # 16 pixels above the threshold, 4 of them inside: IoU 4 / 28
    heat[3, 3] = 2.0  # the maximum lies inside the region
    out = localise_one(heat, region)
    assert out["iou"] == pytest.approx(4 / 28) and out["hit"] and out["chance"] == pytest.approx(0.16)
    heat[9, 9] = 5.0  # now the maximum is outside, and only it passes 0.5 after min-max scaling
    out = localise_one(heat, region)
    assert not out["hit"] and out["iou"] == 0.0


def test_constant_heatmap_points_nowhere_and_small_heatmaps_are_stretched():
    region = square((8, 8), 4, 4, 4)
    assert localise_one(np.zeros((8, 8)), region) == {"iou": 0.0, "hit": False, "chance": 0.25}
    coarse = np.array([[0.0, 0.0], [0.0, 1.0]], np.float32)  # bottom-right quarter hot
    out = localise_one(coarse, region)
    assert out["hit"] and out["iou"] > 0.5
    assert normalise(np.array([3.0, 5.0])).tolist() == [0.0, 1.0]


def test_a_flat_topped_maximum_points_at_its_middle_not_its_corner():
    heat = np.zeros((10, 10), np.float32)
    heat[4:9, 2:7] = 1.0  # a 5x5 plateau centred on (6, 4)
    assert peak(heat) == (6, 4)
    assert localise_one(heat, square((10, 10), 5, 3, 3))["hit"]  # np.argmax would give (4, 2): a miss
    heat[0, 9] = 1.5
    assert peak(heat) == (0, 9)


def test_summary_cis_wilson_and_bootstrap():
    per_image = pd.DataFrame(
        {
            "Path": [f"p{i}" for i in range(20)],
            "observation": "Edema",
            "kind": "clear",
            "iou": np.linspace(0, 1, 20),
            "hit": [True] * 15 + [False] * 5,
            "chance": 0.1,
        }
    )
    row = summarise(per_image, n_resamples=2000, seed=1).iloc[0]
    assert row["n"] == 20 and row["hit_rate"] == 0.75 and row["iou"] == pytest.approx(0.5)
    # Wilson 95% interval for 15/20, by hand: (p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)
    z, n, p = 1.959964, 20, 0.75
    centre, half = (p + z * z / (2 * n)), z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert row["hit_lo"] == pytest.approx((centre - half) / (1 + z * z / n), abs=1e-4)
    assert row["hit_hi"] == pytest.approx((centre + half) / (1 + z * z / n), abs=1e-4)
    assert row["iou_lo"] < 0.5 < row["iou_hi"] and row["iou_hi"] - row["iou_lo"] < 0.4
    assert "0.75 (" in format_scores(summarise(per_image)).iloc[0]["hit rate (95% CI)"]


def test_images_are_scored_by_path_and_observation_only_where_a_region_was_drawn():
    shape = (12, 16)
    regions = Regions(
        {
            "a.jpg": {"Edema": {"kind": "clear", **encode_mask(square(shape, 0, 0, 6))}},
            "b.jpg": {
                "Edema": {"kind": "mimic", **encode_mask(square(shape, 6, 10, 6))},
                "Fracture": {"kind": "faint", **encode_mask(square(shape, 0, 10, 3))},
            },
        },
        0.2,
        None,
    )
    heat = np.zeros((2, 2, 6, 8), np.float32)  # model input 6x8, stretched to 12x16
    heat[0, 0, 0, 0] = heat[1, 0, 5, 7] = 1.0  # Edema: hot where drawn in both images
    heat[1, 1, 5, 0] = 1.0  # Fracture: hot elsewhere
    per_image = localise_images(heat, ["a.jpg", "b.jpg"], ["Edema", "Fracture"], regions)
    got = per_image.set_index(["Path", "observation"])
    assert len(per_image) == 3  # a.jpg has no Fracture region
    assert got.loc[("a.jpg", "Edema"), "hit"] and got.loc[("b.jpg", "Edema"), "hit"]
    assert not got.loc[("b.jpg", "Fracture"), "hit"]
    table = score_localisation(heat, ["a.jpg", "b.jpg"], ["Edema", "Fracture"], regions, n_resamples=50)
    assert set(zip(table["observation"], table["kind"])) == {
        ("Edema", "clear"),
        ("Edema", "mimic"),
        ("Fracture", "faint"),
    }
    with pytest.raises(ValueError, match="expected \\(2, 2"):
        localise_images(heat[:, :1], ["a.jpg", "b.jpg"], ["Edema", "Fracture"], regions)


def test_localise_run_scores_every_drawn_region_of_the_chosen_images(tiny_phantom, tmp_path):
    from chexutils.explain.localise import gallery, write_scores
    from chexutils.models.backbones import ChexpertNet, get_backbone
    from chexutils.models.fractalnet import FractalNet
    from chexutils.phantom import read_regions

    torch.manual_seed(0)
    net = FractalNet(columns=1, blocks=2, channels=(8, 16))
    model = ChexpertNet(get_backbone("fractalnet"), net, net.num_features).eval()
    valid = pd.read_csv(tiny_phantom / "valid.csv")
    per_image, table = localise_run(model, tiny_phantom, valid, max_images=6, image_size=32, n_resamples=50)
    regions = read_regions(tiny_phantom)
    drawn = regions.table()
    assert per_image["Path"].nunique() == 6 and set(per_image["Path"]) <= set(valid["Path"])
    expected = drawn[drawn["Path"].isin(per_image["Path"])]
    assert sorted(zip(per_image["Path"], per_image["observation"])) == sorted(
        zip(expected["Path"], expected["observation"])
    )
    assert table["n"].sum() == len(per_image)
    again, _ = localise_run(model, tiny_phantom, valid, max_images=6, image_size=32, n_resamples=50)
    pd.testing.assert_frame_equal(per_image, again)  # seeded sample, deterministic heatmaps
    write_scores(per_image, table, tmp_path)
    assert len(pd.read_csv(tmp_path / "localisation_images.csv")) == len(per_image)
    fig = gallery(model, tiny_phantom, per_image, 32, per_row=2, path=tmp_path / "g.png")
    assert (tmp_path / "g.png").stat().st_size > 0 and len(fig.axes) % 2 == 0
