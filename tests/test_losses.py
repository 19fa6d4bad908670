"""The loss registry (bce, weighted-bce, auc-margin) against hand computations; PESG's updates; refusals."""

import math

import pytest
import torch

from chexutils.core.errors import DataError
from chexutils.training.config import make_config
from chexutils.training.losses import LOSSES, AUCMargin, accepted_policies, build_loss
from chexutils.training.optim import DEEPAUC_CHEXPERT, PESG, StageLR
from chexutils.training.policies import POLICIES

pytestmark = pytest.mark.usefixtures("one_thread")

# 4 images x 2 observations; one masked entry, one label-smoothed target
LOGITS = [[0.5, -1.0], [-0.2, 0.3], [1.5, 0.0], [-0.7, 2.0]]
VALUES = [[1.0, 0.0], [0.0, 0.0], [1.0, 0.7], [0.0, 1.0]]
MASK = [[1.0, 1.0], [1.0, 0.0], [1.0, 1.0], [1.0, 1.0]]


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


def kept(k):
    return [(LOGITS[i][k], VALUES[i][k]) for i in range(4) if MASK[i][k]]


def tensors():
    return torch.tensor(LOGITS), torch.tensor(VALUES), torch.tensor(MASK)


def hand_bce(pos_weight=(1.0, 1.0)):
    terms = [
        -(pos_weight[k] * t * math.log(sigmoid(x)) + (1 - t) * math.log(1 - sigmoid(x)))
        for k in range(2)
        for x, t in kept(k)
    ]
    return sum(terms) / len(terms)


def test_bce_is_the_masked_bce():
    logits, values, mask = tensors()
    loss = build_loss("bce", "binary", values, mask)(logits, values, mask)
    assert loss.item() == pytest.approx(hand_bce(), rel=1e-6)


def test_weighted_bce_pos_weight_is_negatives_over_positives_of_the_kept_targets():
    logits, values, mask = tensors()
    loss_fn = build_loss("weighted-bce", "binary", values, mask)
    # column 0: positives 1 + 1 = 2, negatives 2 -> 1.0; column 1 (row 1 masked): positives 0.7 + 1, negatives 1 + 0.3
    expected = (2 / 2, 1.3 / 1.7)
    assert loss_fn.pos_weight.tolist() == pytest.approx(expected, rel=1e-6)
    assert loss_fn(logits, values, mask).item() == pytest.approx(hand_bce(expected), rel=1e-6)
    assert loss_fn.describe()["pos_weight"]["No Finding"] == pytest.approx(1.0)
    no_positive = build_loss("weighted-bce", "binary", torch.zeros(3, 2), torch.ones(3, 2))
    assert no_positive.pos_weight.tolist() == [1.0, 1.0]  # nothing to balance


def hand_aucm(p, a, b, alpha, m=1.0, logits=LOGITS):
    """Yuan et al. 2021's F per observation, averaged over the kept entries, then over observations."""
    per_class = []
    for k in range(2):
        entries = [(sigmoid(logits[i][k]), VALUES[i][k]) for i in range(4) if MASK[i][k]]
        mean = sum(
            (1 - p[k]) * (h - a[k]) ** 2 * t
            + p[k] * (h - b[k]) ** 2 * (1 - t)
            + 2 * alpha[k] * (p[k] * h * (1 - t) - (1 - p[k]) * h * t)
            for h, t in entries
        ) / len(entries)
        per_class.append(mean + 2 * alpha[k] * p[k] * (1 - p[k]) * m - p[k] * (1 - p[k]) * alpha[k] ** 2)
    return sum(per_class) / 2


def test_auc_margin_matches_the_paper_formula():
    logits, values, mask = tensors()
    loss_fn = build_loss("auc-margin", "binary", values, mask, margin=0.8)
    p = (2 / 4, 1.7 / 3)  # the prevalence of the kept training targets
    assert loss_fn.p.tolist() == pytest.approx(p, rel=1e-6)
    with torch.no_grad():
        loss_fn.a.copy_(torch.tensor([0.6, 0.4]))
        loss_fn.b.copy_(torch.tensor([0.2, 0.1]))
        loss_fn.alpha.copy_(torch.tensor([0.3, 0.05]))
    expected = hand_aucm(p, (0.6, 0.4), (0.2, 0.1), (0.3, 0.05), m=0.8)
    assert loss_fn(logits, values, mask).item() == pytest.approx(expected, rel=1e-6)


def hand_gradients(w, p, a, b, alpha, m=1.0):
    """dF/dw (per entry), dF/da, dF/db, dF/dalpha of the averaged loss, written out by hand."""
    gw = [[0.0, 0.0] for _ in range(4)]
    ga, gb, galpha = [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]
    for k in range(2):
        rows = [i for i in range(4) if MASK[i][k]]
        n = len(rows) * 2  # mean over kept entries, then over the 2 observations
        for i in rows:
            h, t = sigmoid(w[i][k]), VALUES[i][k]
            dh = 2 * (1 - p[k]) * t * (h - a[k]) + 2 * p[k] * (1 - t) * (h - b[k])
            dh += 2 * alpha[k] * (p[k] * (1 - t) - (1 - p[k]) * t)
            gw[i][k] = dh * h * (1 - h) / n
            ga[k] += -2 * (1 - p[k]) * t * (h - a[k]) / n
            gb[k] += -2 * p[k] * (1 - t) * (h - b[k]) / n
            galpha[k] += 2 * (p[k] * h * (1 - t) - (1 - p[k]) * h * t) / n
        galpha[k] += (2 * p[k] * (1 - p[k]) * m - 2 * p[k] * (1 - p[k]) * alpha[k]) / 2
    return gw, ga, gb, galpha


def test_pesg_updates_a_b_alpha_as_the_paper_says_over_two_steps():
    _, values, mask = tensors()
    loss_fn = build_loss("auc-margin", "binary", values, mask)
    w = torch.tensor(LOGITS, requires_grad=True)  # the "model": its outputs are its parameters
    lr, decay, wd = 0.5, 0.1, 0.01
    optimizer = PESG([[w]], loss_fn.variables, lr=lr, epoch_decay=decay, weight_decay=wd)
    p = loss_fn.p.tolist()
    # the same two steps by hand: v <- v - lr (grad + decay (v - v0) + wd v); alpha <- max(0, alpha + lr grad)
    hw, ha, hb, halpha = [row[:] for row in LOGITS], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]
    w0, a0, b0 = [row[:] for row in LOGITS], [0.0, 0.0], [0.0, 0.0]
    iterates = []
    for _ in range(2):
        optimizer.zero_grad()
        loss_fn(w, values, mask).backward()
        optimizer.step()
        gw, ga, gb, galpha = hand_gradients(hw, p, ha, hb, halpha)
        hw = [
            [hw[i][k] - lr * (gw[i][k] + decay * (hw[i][k] - w0[i][k]) + wd * hw[i][k]) for k in range(2)]
            for i in range(4)
        ]
        ha, hb, halpha = (
            [ha[k] - lr * (ga[k] + decay * (ha[k] - a0[k]) + wd * ha[k]) for k in range(2)],
            [hb[k] - lr * (gb[k] + decay * (hb[k] - b0[k]) + wd * hb[k]) for k in range(2)],
            [max(0.0, halpha[k] + lr * galpha[k]) for k in range(2)],
        )
        iterates.append(w.detach().clone())
        assert loss_fn.a.tolist() == pytest.approx(ha, abs=1e-6) and loss_fn.b.tolist() == pytest.approx(hb, abs=1e-6)
        assert loss_fn.alpha.tolist() == pytest.approx(halpha, abs=1e-6)
        assert w.detach().tolist() == [pytest.approx(row, abs=1e-6) for row in hw]
    # sigmoid scores never reach the margin m = 1 apart: the constraint is violated, alpha grows from 0
    assert all(x > 0 for x in halpha) and halpha[0] > 0.0
    assert all(loss_fn.a > 0) and all(loss_fn.b > 0)  # a, b move towards the mean positive / negative score
    optimizer.new_stage()  # the reference point becomes the stage's average iterate
    torch.testing.assert_close(optimizer.state[w]["reference"], (iterates[0] + iterates[1]) / 2)
    # a too large alpha is pushed down by the ascent step and clipped at 0, never negative
    with torch.no_grad():
        loss_fn.alpha.fill_(50.0)
    optimizer.zero_grad()
    loss_fn(w, values, mask).backward()
    optimizer.param_groups[-1]["lr"] = 10.0
    optimizer.step()
    assert loss_fn.alpha.tolist() == [0.0, 0.0]


def test_pesg_state_round_trips_and_stages_follow_the_lr_decay():
    _, values, mask = tensors()
    loss_fn = build_loss("auc-margin", "binary", values, mask)
    w = torch.tensor(LOGITS, requires_grad=True)
    optimizer = PESG([[w]], loss_fn.variables, lr=0.5)
    scheduler = StageLR(optimizer, step_size=1, gamma=0.5)
    loss_fn(w, values, mask).backward()
    optimizer.step()
    scheduler.step()  # end of epoch 1: lr halves and a new stage starts at the average (= the one iterate)
    assert optimizer.param_groups[0]["lr"] == 0.25
    torch.testing.assert_close(optimizer.state[w]["reference"], w.detach())
    saved = optimizer.state_dict()
    other = AUCMargin(values, mask)
    restored = PESG([[w.detach().clone().requires_grad_()]], other.variables, lr=0.5)
    restored.load_state_dict(saved)
    for mine, theirs in zip(loss_fn.variables, other.variables):
        torch.testing.assert_close(mine.detach(), theirs.detach())


def test_each_loss_declares_the_policies_it_accepts_and_refuses_the_others_with_a_reason():
    binary = [name for name in POLICIES if name != "U-MultiClass"]
    assert accepted_policies("bce", POLICIES) == list(POLICIES)
    assert accepted_policies("weighted-bce", POLICIES) == accepted_policies("auc-margin", POLICIES) == binary
    for policy in ("U-Ignore", "U-Zeros", "U-Ones", "U-LSR-Zeros", "U-LSR-Ones", "mixed"):
        assert make_config(loss="auc-margin", policy=policy).loss == "auc-margin"
    for loss in ("weighted-bce", "auc-margin"):
        with pytest.raises(DataError, match=f"loss {loss} does not accept policy U-MultiClass: .*three-class head"):
            make_config(loss=loss, policy="U-MultiClass")
    refusals = [
        ({"loss": "focal"}, "loss is 'focal'; known: " + ", ".join(LOSSES)),
        ({"auc_margin": 0.5}, "auc_margin set, but loss is bce; they apply to loss auc-margin only"),
        ({"loss": "auc-margin", "auc_margin": 0}, "auc_margin is 0; expected a number > 0"),
        ({"reinit_head": True}, "reinit_head is true without init_from"),
        ({"freeze_trunk_epochs": 1, "nproc_per_node": 2}, "freeze_trunk_epochs with nproc_per_node > 1"),
        ({"head_lr": -1.0}, "head_lr is -1.0; expected a number >= 0"),
    ]
    for values, message in refusals:
        with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
            make_config(**values)


def test_the_deepauc_chexpert_recipe_is_two_valid_configs(tmp_path):
    stage1 = make_config(**DEEPAUC_CHEXPERT["stage1"])
    stage2 = make_config(**DEEPAUC_CHEXPERT["stage2"], init_from=str(tmp_path / "stage1"))
    assert stage1.loss == "bce" and stage2.loss == "auc-margin" and stage2.reinit_head
