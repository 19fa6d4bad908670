"""Recipes without training: the hierarchy's product rule by hand, conditional masks, the three cache
geometries on hand-made images, seeded label-preserving augmentation, the recipe checks, run names that
carry a training axis only off its default, and 05's grouping by recipe."""

import hashlib

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from chexutils.core.errors import DataError
from chexutils.core.labels import BINARY, OBSERVATIONS, hierarchy_order, marginal_from_conditional
from chexutils.data import cache as cache_module
from chexutils.data.cache import CACHE_VERSION, cache_key, open_cache, resize_image
from chexutils.data.chexpert import read_chexpert
from chexutils.evaluation import compare, policy_sweep
from chexutils.models.backbones import probabilities
from chexutils.training.augment import Augmentation
from chexutils.training.config import make_config
from chexutils.training.recipes import conditional_mask, parent_positive_rows, stage_of
from chexutils.training.run_identity import run_name_part
from chexutils.workbook.runner import Config, Step

pytestmark = pytest.mark.usefixtures("one_thread")

# --- the product rule on a tiny hierarchy: A -> B -> C, D a root ----------------------------------
TINY = ("A", "B", "C", "D")
TINY_PARENT = {"B": "A", "C": "B"}


def test_the_product_rule_runs_down_a_chain_as_by_hand():
    conditional = np.array([[0.5, 0.4, 0.5, 0.9], [0.2, 1.0, 0.25, 0.1]])
    marginal = marginal_from_conditional(conditional, TINY, TINY_PARENT)
    # by hand: P(B) = 0.4 * 0.5 = 0.2, P(C) = 0.5 * P(B) = 0.1; row 2: 1.0 * 0.2 = 0.2, 0.25 * 0.2 = 0.05
    np.testing.assert_allclose(marginal, [[0.5, 0.2, 0.1, 0.9], [0.2, 0.2, 0.05, 0.1]])
    np.testing.assert_allclose(conditional[0], [0.5, 0.4, 0.5, 0.9])  # the input is left as it was
    assert hierarchy_order(TINY_PARENT, TINY) == ["B", "C"]
    with pytest.raises(ValueError, match="cycle"):
        hierarchy_order({"A": "B", "B": "A"}, ("A", "B"))


def test_a_hierarchical_runs_probabilities_are_the_product_over_the_labelers_hierarchy():
    logits = torch.zeros(1, len(OBSERVATIONS))
    col = {name: i for i, name in enumerate(OBSERVATIONS)}
    logits[0, col["Lung Opacity"]] = np.log(0.8 / 0.2)  # sigmoid 0.8
    logits[0, col["Enlarged Cardiomediastinum"]] = np.log(0.25 / 0.75)  # sigmoid 0.25
    plain = probabilities(logits, BINARY)
    product = probabilities(logits, BINARY, conditional=True)
    assert product[0, col["Edema"]].item() == pytest.approx(0.5 * 0.8)  # P(Edema | Opacity) 0.5 x P(Opacity)
    assert product[0, col["Cardiomegaly"]].item() == pytest.approx(0.5 * 0.25)
    assert product[0, col["Pleural Effusion"]].item() == pytest.approx(plain[0, col["Pleural Effusion"]].item())
    assert product[0, col["Lung Opacity"]].item() == pytest.approx(0.8)


def test_conditional_training_keeps_a_child_only_where_its_parent_is_positive():
    values = torch.tensor([[1.0, 1.0, 0.0, 1.0], [0.0, 1.0, 1.0, 0.0], [1.0, 0.0, 1.0, 1.0]])
    mask = torch.ones_like(values)
    mask[2, 0] = 0  # A not kept in row 3: not a positive parent
    kept = conditional_mask(values, mask, TINY, TINY_PARENT)
    # B kept where A is positive and kept (row 1); C where B is positive (rows 1 and 2)
    np.testing.assert_array_equal(kept[:, 1].numpy(), [1, 0, 0])
    np.testing.assert_array_equal(kept[:, 2].numpy(), [1, 1, 0])
    np.testing.assert_array_equal(kept[:, [0, 3]].numpy(), mask[:, [0, 3]].numpy())  # roots untouched
    assert parent_positive_rows(values, mask, TINY, TINY_PARENT).tolist() == [0, 1]  # A or B positive


def test_a_two_stage_recipe_switches_at_stage1_epochs():
    cfg = make_config(recipe="hierarchical", epochs=4, stage1_epochs=1, image_size=32)
    assert [stage_of(cfg, e) for e in range(4)] == [1, 2, 2, 2]
    assert {stage_of(make_config(epochs=4, stage1_epochs=2), e) for e in range(4)} == {2}  # single: ignored


@pytest.mark.parametrize(
    "values, pattern",
    [
        ({"recipe": "hierarchical", "epochs": 3, "stage1_epochs": 3}, "between 1 and epochs - 1"),
        ({"recipe": "deepauc", "epochs": 3, "stage1_epochs": 1}, "set loss"),
        ({"recipe": "hierarchical", "epochs": 3, "stage1_epochs": 1, "policy": "U-MultiClass"}, "binary-head"),
        ({"recipe": "stacked"}, "recipe is 'stacked'; known"),
        ({"geometry": "letterbox"}, "geometry is 'letterbox'; known: square, pad, crop"),
        ({"augment_flip": 1.5}, "augment_flip is 1.5; expected a number <= 1"),
        ({"augment_crop": 0}, "augment_crop is 0"),
        ({"augment_rotate": 90}, "<= 45"),
    ],
)
def test_bad_recipe_and_augmentation_values_are_refused_in_one_line(values, pattern):
    with pytest.raises(DataError, match=pattern) as err:
        make_config(**values)
    assert "\n" not in str(err.value)


# --- cache-time geometry -------------------------------------------------------------------------


def test_pad_keeps_the_aspect_and_fills_zeros_around_the_centred_image():
    image = np.arange(10, 18, dtype=np.uint8).reshape(2, 4)  # H 2, W 4: no resize needed at size 4
    padded = resize_image(image, 4, geometry="pad")
    np.testing.assert_array_equal(padded[1:3], image)
    assert not padded[[0, 3]].any()
    halved = resize_image(np.full((4, 8), 100, np.uint8), 4, geometry="pad")  # scale 0.5 -> 4 x 2
    np.testing.assert_array_equal(halved, [[0] * 4, [100] * 4, [100] * 4, [0] * 4])


def test_crop_keeps_the_aspect_and_the_centre_square():
    image = np.arange(32, dtype=np.uint8).reshape(4, 8)  # H 4, W 8 at size 4: the middle columns 2..5
    np.testing.assert_array_equal(resize_image(image, 4, geometry="crop"), image[:, 2:6])
    tall = np.arange(24, dtype=np.uint8).reshape(6, 4)[:, :3]  # H 6, W 3 at size 3: rows 1..3
    np.testing.assert_array_equal(resize_image(np.ascontiguousarray(tall), 3, geometry="crop"), tall[1:4])


def test_square_is_the_original_studys_stretch_and_unknown_geometry_fails():
    image = np.arange(32, dtype=np.uint8).reshape(4, 8)
    expected = np.array(Image.fromarray(image, mode="L").resize((4, 4), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(resize_image(image, 4), expected)
    with pytest.raises(ValueError, match="unknown geometry"):
        resize_image(image, 4, geometry="letterbox")


def test_the_cache_key_names_the_geometry_and_square_keeps_the_old_key(chexpert_dir, tmp_path):
    paths = ["a.jpg", "b.jpg"]
    old = hashlib.sha256(f"v{CACHE_VERSION}|64|bilinear|".encode())
    for p in paths:
        old.update(p.encode() + b"\n")
    assert cache_key(paths, 64, "bilinear") == old.hexdigest()[:16]  # caches already built stay valid
    keys = {g: cache_key(paths, 64, "bilinear", g) for g in cache_module.GEOMETRIES}
    assert len(set(keys.values())) == 3
    frame = read_chexpert(chexpert_dir, root=tmp_path)
    square = open_cache(frame, 16, tmp_path / "cache", workers=1)
    padded = open_cache(frame, 16, tmp_path / "cache", workers=1, geometry="pad")
    assert square.folder != padded.folder and padded.geometry == "pad"
    first = cache_module.read_image(frame["image"].iloc[0])  # 40 x 48: pad leaves rows of zeros
    np.testing.assert_array_equal(padded.images[0], resize_image(first, 16, geometry="pad"))
    assert not padded.images[0][0].any() and square.images[0][0].any()


# --- on-device augmentation ----------------------------------------------------------------------


def constant_batch(n: int = 6, size: int = 16) -> torch.Tensor:
    """Image i is the constant 10 * i + 5: any mixing of images or rows would show."""
    return (torch.arange(n, dtype=torch.uint8) * 10 + 5)[:, None, None, None].expand(n, 1, size, size).clone()


def test_augmentation_is_seeded_reproducible_per_epoch():
    images = torch.randint(0, 256, (8, 1, 24, 24), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    make = lambda seed: Augmentation(crop=0.7, flip=0.5, rotate=10, seed=seed)  # noqa: E731
    first, again, other = make(3), make(3), make(4)
    a = first(images)
    assert torch.equal(a, again(images)) and a.dtype == torch.uint8 and a.shape == images.shape
    assert not torch.equal(a, other(images))
    b = first(images)  # the next batch of the epoch draws anew
    first.start_epoch(0)
    assert torch.equal(first(images), a) and not torch.equal(a, b)
    first.start_epoch(1)
    assert not torch.equal(first(images), a)


def test_augmentation_preserves_each_image_and_row():
    images = constant_batch()
    cropped = Augmentation(crop=0.6, flip=0.5, seed=0)(images)  # the window stays inside: no zeros come in
    assert torch.equal(cropped, images)  # a constant image stays itself: no row takes another's pixels
    heart_left = torch.zeros(4, 1, 8, 8, dtype=torch.uint8)
    heart_left[..., :3] = 200
    flipped = Augmentation(flip=1.0)(heart_left)
    assert torch.equal(flipped, heart_left.flip(-1))  # exact, and the drawn side moves: anatomy never seen
    off = Augmentation()
    assert not off.active and off(heart_left) is heart_left
    rotated = Augmentation(rotate=30, seed=2)(constant_batch(size=32))
    centre = rotated[:, 0, 12:20, 12:20]  # the centre stays the image's own value after a rotation
    assert torch.equal(centre, constant_batch(size=32)[:, 0, 12:20, 12:20])


# --- run names and 05's grouping -----------------------------------------------------------------


def test_run_names_carry_a_training_axis_only_off_its_default(tmp_path):
    grid = {"policy": ["U-Ones"], "backbone": ["densenet121"], "loss": ["bce", "auc-margin"], "seed": [0]}
    config = Config(tmp_path / "c.yaml", "x", {}, [Step("03_train.ipynb", per_run=True)], grid)
    names = [name for name, _ in config.runs()]
    assert names == ["U-Ones_densenet121_seed0", "U-Ones_densenet121_auc-margin_seed0"]
    dotted = Config(tmp_path / "c.yaml", "x", {}, [], {"policy": ["U-Zeros"], "train.augment_flip": [0.0, 0.5]})
    assert [n for n, _ in dotted.runs()] == ["U-Zeros", "U-Zeros_flip0.5"]
    assert run_name_part("init_from", "output/sweep/U-Ones_densenet121_seed0") == "from-U-Ones_densenet121_seed0"
    assert run_name_part("epochs", 3) is None  # not a named axis: the runner's own rule (epochs3)


def test_a_bare_loss_axis_reaches_notebook_03s_train_mapping(tmp_path):
    from chexutils.workbook.runner import step_parameters

    step = Step("03_train.ipynb", {"train": {"image_size": 32, "epochs": 1}}, per_run=True)
    config = Config(tmp_path / "c.yaml", "x", {}, [step], {"policy": ["U-Ones"], "loss": ["auc-margin"]})
    (run,) = config.runs()
    params = step_parameters(config, step, run)
    assert params["train"] == {"image_size": 32, "epochs": 1, "loss": "auc-margin"}
    assert "loss" not in params


def runs_frame() -> pd.DataFrame:
    rows = [
        (f"{p}_{loss}_seed{s}", p, loss, "densenet121", 64, s, f"/x/{p}{loss}{s}")
        for p in ("U-Zeros", "U-Ones")
        for loss in ("bce", "auc-margin")
        for s in (0, 1)
    ]
    return pd.DataFrame(rows, columns=["run", "policy", "recipe", "backbone", "image_size", "seed", "path"]).set_index(
        "run"
    )


def test_arms_are_one_policy_and_one_recipe_and_the_bce_names_are_unchanged():
    arms = compare.run_arms(runs_frame())
    assert sorted(arms) == sorted(
        [
            "U-Zeros densenet121 64px",
            "U-Zeros auc-margin densenet121 64px",
            "U-Ones densenet121 64px",
            "U-Ones auc-margin densenet121 64px",
        ]
    )
    assert all(len(arm) == 2 for arm in arms.values())
    assert compare.recipe_label({"loss": "bce"}) == "bce"
    label = compare.recipe_label({"loss": "auc-margin", "recipe": "deepauc", "geometry": "pad", "augment_flip": 0.5})
    assert label == "deepauc auc-margin pad flip0.5"


def test_verdicts_by_recipe_say_where_the_better_policy_changes():
    def comparison(verdicts: dict) -> policy_sweep.PolicyComparison:
        table = pd.DataFrame(
            {
                "verdict": list(verdicts.values()),
                "U-Ones minus U-Zeros": [0.05, 0.0],
                "ci_low": [0.01, -0.02],
                "ci_high": [0.09, 0.02],
            },
            index=list(verdicts),
        )
        return policy_sweep.PolicyComparison("official-valid", choices={"official-valid": table})

    by_recipe = {
        "bce": comparison({"Edema": "U-Ones (Holm p 0.01)", "Atelectasis": "no detectable difference (...)"}),
        "auc-margin": comparison({"Edema": "no detectable difference (...)", "Atelectasis": "no detectable (...)"}),
    }
    table = policy_sweep.verdicts_by_recipe(by_recipe)
    assert table.loc["Edema", "verdict changes"] and not table.loc["Atelectasis", "verdict changes"]
    assert table.loc["Edema", "bce"].startswith("U-Ones (Holm p 0.01) (Δ +0.050 [+0.010, +0.090])")
    assert policy_sweep.baseline_comparison(by_recipe) is by_recipe["bce"]


def test_the_per_label_choice_never_pools_two_losses_seeds_into_one_arm():
    runs = runs_frame()
    arms = policy_sweep.policy_arms(runs)  # the bce recipe first
    assert sorted(arms) == ["U-Ones", "U-Zeros"] and all(len(arm) == 2 for arm in arms.values())
    assert all(str(path) == f"/x/{p}bce{s}" for p, arm in arms.items() for s, path in arm.items())
    auc = policy_sweep.policy_arms(runs[runs["recipe"] == "auc-margin"])
    assert all(str(path) == f"/x/{p}auc-margin{s}" for p, arm in auc.items() for s, path in arm.items())
