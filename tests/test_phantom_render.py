"""Phantom radiograph renderer: shapes, determinism, per-finding signs and mimics, validation."""

import math

import numpy as np
import pytest

from chexutils.phantom.render import FINDINGS, render_image

SIZE = (128, 104)  # (W, H), the phantom's default
VIEWS = [True, False]


def draw(signs=None, mimics=None, *, frontal=True, size=SIZE, seed=0, style="faint-sign"):
    rng = np.random.default_rng(seed)
    return render_image(signs or {}, mimics or {}, frontal=frontal, size=size, rng=rng, mimic_style=style)


def mad(a, b):
    """Mean absolute pixel difference."""
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def band(img, x0, x1, y0=0.3, y1=0.55):
    """Mean brightness of a box given in fractions of the width and height (mid-chest rows by default)."""
    h, w = img.shape
    return float(img[int(y0 * h) : int(y1 * h), int(x0 * w) : int(x1 * w)].mean())


def test_findings_are_the_13_visible_observations_in_order():
    assert FINDINGS == (
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


@pytest.mark.parametrize("frontal", VIEWS)
@pytest.mark.parametrize("size", [(32, 32), (64, 52), (128, 104), (390, 320), (100, 160)])
def test_shape_dtype_and_content(size, frontal):
    img = draw({"Cardiomegaly": 0.5}, {"Lung Lesion": 0.4}, frontal=frontal, size=size)
    w, h = size
    assert img.shape == (h, w)
    assert img.dtype == np.uint8
    assert img.std() > 10  # an actual picture, not a flat field
    assert img[:, : max(1, w // 20)].mean() < img.mean()  # dark background beside the body


@pytest.mark.parametrize("frontal", VIEWS)
def test_deterministic_for_equal_seeds_and_different_across_seeds(frontal):
    signs, mimics = {"Edema": 0.7, "Support Devices": 0.3}, {"Pneumothorax": 0.5}
    a = draw(signs, mimics, frontal=frontal, seed=11)
    b = draw(signs, mimics, frontal=frontal, seed=11)
    c = draw(signs, mimics, frontal=frontal, seed=12)
    np.testing.assert_array_equal(a, b)
    assert mad(a, c) > 1.0


def test_uses_only_the_passed_generator():
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    draw({"Pneumonia": 0.5}, {"Fracture": 0.5})
    np.testing.assert_array_equal(np.random.get_state()[1], before)


def test_images_vary_in_anatomy_and_exposure():
    imgs = [draw(seed=s).astype(np.float32) for s in range(6)]
    means = [i.mean() for i in imgs]
    assert max(means) - min(means) > 5
    assert min(mad(imgs[0], other) for other in imgs[1:]) > 3


@pytest.mark.parametrize("name", FINDINGS)
def test_sign_is_localised_and_grows_with_severity(name):
    for frontal in VIEWS:
        for seed in (0, 1):
            base = draw(frontal=frontal, seed=seed)
            faint = draw({name: 0.2}, frontal=frontal, seed=seed)
            clear = draw({name: 0.9}, frontal=frontal, seed=seed)
            assert mad(clear, base) > mad(faint, base) > 0, (name, frontal, seed)
            changed = np.abs(clear.astype(np.int16) - base) > 0
            assert changed.mean() < 0.45, (name, frontal, seed)  # the rest of the film is untouched


@pytest.mark.parametrize("name", FINDINGS)
def test_look_alike_mimic_changes_the_image_and_differs_from_the_sign(name):
    for frontal in VIEWS:
        for seed in (0, 1):
            base = draw(frontal=frontal, seed=seed)
            mimic = draw(mimics={name: 0.3}, frontal=frontal, seed=seed, style="look-alike")
            sign = draw({name: 0.3}, frontal=frontal, seed=seed)
            assert mad(mimic, base) > 0, (name, frontal, seed)
            assert mad(mimic, sign) > 0.5 * min(mad(mimic, base), mad(sign, base)), (name, frontal, seed)


@pytest.mark.parametrize("name", FINDINGS)
def test_faint_sign_mimic_is_the_sign_itself(name):
    # the default style: a mimic of strength s has the pixels of the sign of strength s (same seed),
    # so faint positives and mimics are alike by construction, as the expected answer assumes
    for frontal in VIEWS:
        base = draw(frontal=frontal, seed=3)
        mimic = draw(mimics={name: 0.2}, frontal=frontal, seed=3)
        assert np.array_equal(mimic, draw({name: 0.2}, frontal=frontal, seed=3)), (name, frontal)
        assert mad(mimic, base) > 0, (name, frontal)


def test_unknown_mimic_style_raises_naming_the_choices():
    with pytest.raises(ValueError, match="faint-sign"):
        draw(mimics={"Edema": 0.2}, style="lookalike")


def test_everything_at_once_renders_at_full_size():
    for frontal in VIEWS:
        allsigns = draw({n: 1.0 for n in FINDINGS}, frontal=frontal, size=(390, 320))
        allmimics = draw(mimics={n: 1.0 for n in FINDINGS}, frontal=frontal, size=(390, 320), style="look-alike")
        assert allsigns.shape == allmimics.shape == (320, 390)
        assert mad(allsigns, allmimics) > 2


def test_lateral_view_looks_different_from_frontal():
    for seed in range(4):
        frontal, lateral = draw(frontal=True, seed=seed), draw(frontal=False, seed=seed)
        assert mad(frontal, lateral) > 8
        # PA: bright mediastinum between two dark lungs; lateral: one dark lung, bright spine behind it
        assert band(frontal, 0.47, 0.53) > max(band(frontal, 0.25, 0.35), band(frontal, 0.65, 0.75)) + 20
        assert band(lateral, 0.79, 0.85) > band(lateral, 0.45, 0.55) + 20


@pytest.mark.parametrize("which", ["signs", "mimics"])
@pytest.mark.parametrize("bad", ["Pneumonitis", "No Finding", "cardiomegaly"])
def test_unknown_observation_raises_naming_it(which, bad):
    with pytest.raises(ValueError) as err:
        draw(**{which: {"Edema": 0.5, bad: 0.5}})
    assert repr(bad) in str(err.value)
    assert "Support Devices" in str(err.value)  # the valid names are listed


@pytest.mark.parametrize("which", ["signs", "mimics"])
@pytest.mark.parametrize("value", [0, 0.0, -0.2, 1.01, 5, math.nan, math.inf, "high", None])
def test_strength_outside_unit_interval_raises_naming_the_key(which, value):
    with pytest.raises(ValueError, match="Pleural Effusion"):
        draw(**{which: {"Pleural Effusion": value}})


def test_strength_limits_are_accepted():
    plain = draw()
    strongest = draw({"Fracture": 1.0}, {"Lung Lesion": 1})
    weakest = draw({"Edema": 1e-3})
    for image in (strongest, weakest):  # both ends of (0, 1] render a changed image of the same shape
        assert image.shape == plain.shape and image.dtype == np.uint8 and mad(image, plain) > 0
