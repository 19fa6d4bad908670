"""Known answer: a model trained on a tiny phantom looks where the phantom drew the sign; an untrained one does not.

Support Devices is the phantom's strongest sign (a radio-opaque line of density 0.12-0.42 on a
0-0.8 scale, drawn the same way in every image; Pneumothorax and Pleural Effusion are fainter or
smaller at 48 px). The phantom is rendered directly (320 frontal 48x48 images, half with the sign,
every image with two other clear findings as distractors), its regions recorded by the renderer and
scored through the same sidecar encoding the generator writes. One small FractalNet (two blocks, so
Grad-CAM's maps are 24x24), 150 Adam steps: about 20 s on one core.
"""

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from chexutils.core.labels import OBSERVATIONS
from chexutils.explain.heatmaps import grad_cam
from chexutils.explain.localise import score_localisation
from chexutils.models.backbones import ChexpertNet, get_backbone
from chexutils.models.fractalnet import FractalNet
from chexutils.phantom.regions import Regions, encode_mask
from chexutils.phantom.render import FINDINGS, render_image

SIGN, SIZE, N, STEPS = "Support Devices", 48, 320, 150
TRAIN = int(N * 0.75)


def tiny_model(seed: int) -> ChexpertNet:
    torch.manual_seed(seed)
    net = FractalNet(columns=1, blocks=2, channels=(16, 32), drop_path=0.0)  # 24x24 maps at 48 px
    return ChexpertNet(get_backbone("fractalnet"), net, net.num_features)


def make_phantom(size: int = SIZE):
    """Images (N, 1, S, S) uint8, labels (N,), their Paths and a Regions object with the drawn signs."""
    rng = np.random.default_rng(0)
    others = [f for f in FINDINGS if f != SIGN]
    images, labels, recorded = [], [], {}
    for i in range(N):
        signs = {str(o): float(rng.uniform(0.45, 1.0)) for o in rng.choice(others, size=2, replace=False)}
        if i % 2 == 0:
            signs[SIGN] = float(rng.uniform(0.6, 1.0))
        drawn = {}
        images.append(
            render_image(signs, {}, frontal=True, size=(size, size), rng=np.random.default_rng(100 + i), regions=drawn)
        )
        labels.append(float(SIGN in signs))
        recorded[f"img{i}.jpg"] = {obs: {"kind": "clear", **encode_mask(mask)} for (obs, _), mask in drawn.items()}
    paths = list(recorded)
    return torch.from_numpy(np.stack(images))[:, None], torch.tensor(labels), paths, Regions(recorded, 0.2, None)


def train(phantom, model, steps: int = STEPS, lr: float = 2e-3):
    """Adam on the sign's logit only; one thread (a tiny model: more threads only wait on each other)."""
    images, labels, _, _ = phantom
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    k = OBSERVATIONS.index(SIGN)
    order = torch.Generator().manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model.train()
        for _ in range(steps):
            batch = torch.randint(0, TRAIN, (32,), generator=order)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(images[batch])[:, k], labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()


@pytest.fixture(scope="module")
def phantom():
    return make_phantom()


@pytest.fixture(scope="module")
def trained(phantom):
    return train(phantom, tiny_model(0))


def held_out_scores(model, phantom):
    images, labels, paths, regions = phantom
    test = [i for i in range(TRAIN, N) if labels[i] == 1]
    heat = grad_cam(model, images[test], [SIGN])
    table = score_localisation(heat, [paths[i] for i in test], [SIGN], regions, n_resamples=500)
    row = table.set_index("kind").loc["clear"]
    print(
        f"{SIGN}: hit rate {row['hit_rate']:.3f} ({row['hit_lo']:.3f}-{row['hit_hi']:.3f}), "
        f"IoU {row['iou']:.3f}, chance {row['chance']:.3f}"
    )  # shown with pytest -s
    return row


def test_trained_model_localises_the_sign_far_better_than_chance(trained, phantom):
    images, labels, _, _ = phantom
    with torch.no_grad():
        scores = trained(images[TRAIN:])[:, OBSERVATIONS.index(SIGN)]
    assert roc_auc_score(labels[TRAIN:], scores) > 0.8  # it learned the sign (0.88 here)
    row = held_out_scores(trained, phantom)
    assert row["n"] == (N - TRAIN) // 2
    assert row["hit_lo"] > 5 * row["chance"]  # Wilson lower bound far above the random-pixel hit rate
    assert row["iou_lo"] > 0.2


def test_untrained_model_does_not(trained, phantom):
    untrained = held_out_scores(tiny_model(1), phantom)
    trained_row = held_out_scores(trained, phantom)
    assert untrained["hit_rate"] < 2 * untrained["chance"]
    assert trained_row["hit_rate"] - untrained["hit_rate"] > 0.4
    assert trained_row["iou"] - untrained["iou"] > 0.2
