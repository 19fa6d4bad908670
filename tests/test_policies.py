import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from chexutils.core.errors import DataError
from chexutils.core.labels import OBSERVATIONS
from chexutils.models.backbones import probabilities
from chexutils.training.losses import masked_loss
from chexutils.training.policies import ORIGINAL_MIXED_MAPPING, POLICIES, Targets, get_policy, register_policy

NAN = np.nan
# Hand-made labels (rows p0..p4); observations not listed are blank everywhere.
LABELS = {
    "No Finding": [1, NAN, NAN, NAN, NAN],
    "Cardiomegaly": [1, 0, -1, NAN, -1],
    "Edema": [-1, 1, NAN, 0, -1],
    "Pleural Effusion": [NAN, -1, 0, 1, 1],
    "Atelectasis": [-1, -1, 1, 0, NAN],
}
ROWS = len(LABELS["Edema"])


def col(name):
    return OBSERVATIONS.index(name)


def make_frame(labels=LABELS) -> pd.DataFrame:
    """A small frame in read_chexpert's form: Path + one float column per observation."""
    n = len(next(iter(labels.values())))
    frame = pd.DataFrame(
        {"Path": [f"CheXpert-v1.0-small/train/patient{i + 1:05d}/study1/view1_frontal.jpg" for i in range(n)]}
    )
    for name in OBSERVATIONS:
        frame[name] = np.asarray(labels.get(name, [NAN] * n), dtype=float)
    return frame


def teacher_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Teacher probabilities 0.15 * (row + 1) + 0.01 * column, keyed by Path (distinct per entry)."""
    probs = 0.15 * (np.arange(len(frame))[:, None] + 1) + 0.01 * np.arange(len(OBSERVATIONS))[None, :]
    return pd.concat([frame[["Path"]].reset_index(drop=True), pd.DataFrame(probs, columns=list(OBSERVATIONS))], axis=1)


FRAME = make_frame()
RAW = FRAME[list(OBSERVATIONS)].to_numpy()
EXTRA_OPTIONS = {"U-SelfTrained": {"teacher_predictions": teacher_frame(FRAME)}}


def build(name, **options):
    return get_policy(name, **{**EXTRA_OPTIONS.get(name, {}), **options})


# ---- every registered policy -------------------------------------------------------------------


@pytest.fixture(params=sorted(POLICIES))
def name(request):
    return request.param


def test_certain_labels_unchanged_and_shapes(name):
    policy = build(name)
    t = policy.targets(FRAME)
    assert isinstance(t, Targets) and t.values.shape == t.mask.shape == (ROWS, len(OBSERVATIONS))
    assert t.mask.dtype == np.float32 and set(np.unique(t.mask)) <= {0.0, 1.0}
    assert policy.head in ("binary", "multiclass") and policy.name == name
    if policy.head == "binary":
        assert t.values.dtype == np.float32 and ((t.values >= 0) & (t.values <= 1)).all()
    else:
        assert t.values.dtype == np.int64 and set(np.unique(t.values)) <= {0, 1, 2}
    assert (t.values[RAW == 1] == 1).all() and (t.values[RAW == 0] == 0).all()
    assert (t.mask[RAW == 1] == 1).all() and (t.mask[RAW == 0] == 1).all()
    blank = np.isnan(RAW)
    assert (t.values[blank] == 0).all() and (t.mask[blank] == 1).all()  # default blank="negative"


def test_blank_ignore_masks_only_blanks(name):
    t, t_ignore = build(name).targets(FRAME), build(name, blank="ignore").targets(FRAME)
    blank = np.isnan(RAW)
    assert (t_ignore.mask[blank] == 0).all()
    np.testing.assert_array_equal(t_ignore.mask[~blank], t.mask[~blank])
    np.testing.assert_array_equal(t_ignore.values[~blank], t.values[~blank])


def test_describe_is_json_and_bad_options_fail(name):
    policy = build(name)
    described = json.loads(json.dumps(policy.describe()))
    assert described["name"] == name and described["blank"] == "negative"
    with pytest.raises(TypeError, match="colour"):
        build(name, colour="red")
    with pytest.raises(ValueError, match="blank"):
        build(name, blank="zero")


def test_rows_keyed_not_positional(name):
    """Shuffling rows and taking a subset shuffles/subsets the targets, nothing else; the frame is untouched."""
    policy, before = build(name), FRAME.copy()
    full = policy.targets(FRAME)
    order = np.array([3, 0, 4, 1])
    part = policy.targets(FRAME.iloc[order])  # keeps the shuffled index, as a real subset would
    np.testing.assert_array_equal(part.values, full.values[order])
    np.testing.assert_array_equal(part.mask, full.mask[order])
    pd.testing.assert_frame_equal(FRAME, before)


def test_no_finding_handled_generically(name):
    """No Finding has no uncertain entries in the real data, but one here is treated like any other column."""
    t = build(name).targets(make_frame({"No Finding": [-1.0, 1.0], "Edema": [-1.0, 0.0]}))
    nf, ed = col("No Finding"), col("Edema")
    np.testing.assert_array_equal(t.mask[:, nf], t.mask[:, ed])
    if name not in ("mixed", "U-SelfTrained", "U-LSR-Zeros", "U-LSR-Ones"):
        assert t.values[0, nf] == t.values[0, ed]


# ---- registry ----------------------------------------------------------------------------------


def test_registry_names_and_unknown_name():
    assert {
        "U-Ignore",
        "U-Zeros",
        "U-Ones",
        "U-MultiClass",
        "U-SelfTrained",
        "U-LSR-Zeros",
        "U-LSR-Ones",
        "mixed",
    } <= set(POLICIES)
    with pytest.raises(KeyError, match="U-Ignore.*U-Zeros"):
        get_policy("U-Twos")
    with pytest.raises(ValueError, match="already registered"):
        register_policy("U-Ones")(type("Again", (), {}))


def test_describe_round_trips():
    for policy in (get_policy("U-LSR-Ones", seed=4, blank="ignore"), get_policy("mixed"), get_policy("U-Zeros")):
        d = policy.describe()
        again = get_policy(d.pop("name"), **d)
        np.testing.assert_array_equal(again.targets(FRAME).values, policy.targets(FRAME).values)


def test_bad_frames_are_data_errors():
    with pytest.raises(DataError, match="Edema"):
        get_policy("U-Zeros").targets(FRAME.drop(columns="Edema"))
    bad = FRAME.copy()
    bad.loc[2, "Fracture"] = 2.0
    with pytest.raises(DataError, match="Fracture"):
        get_policy("U-Zeros").targets(bad)
    with pytest.raises(DataError, match="Path"):
        get_policy("U-LSR-Ones").targets(FRAME.drop(columns="Path"))


# ---- exact targets -----------------------------------------------------------------------------

SHOWN = ["Cardiomegaly", "Edema", "Pleural Effusion", "Atelectasis"]


def shown(array):
    return array[:, [col(n) for n in SHOWN]]


def test_u_ignore_exact():
    t = get_policy("U-Ignore").targets(FRAME)
    np.testing.assert_array_equal(
        shown(t.values), [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0], [0, 0, 1, 0]]
    )
    np.testing.assert_array_equal(shown(t.mask), [[1, 0, 1, 0], [1, 1, 0, 0], [0, 1, 1, 1], [1, 1, 1, 1], [0, 0, 1, 1]])


def test_u_zeros_and_u_ones_exact():
    zeros, ones = get_policy("U-Zeros").targets(FRAME), get_policy("U-Ones").targets(FRAME)
    np.testing.assert_array_equal(
        shown(zeros.values), [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0], [0, 0, 1, 0]]
    )
    np.testing.assert_array_equal(
        shown(ones.values), [[1, 1, 0, 1], [0, 1, 1, 1], [1, 0, 0, 1], [0, 0, 1, 0], [1, 1, 1, 0]]
    )
    assert (zeros.mask == 1).all() and (ones.mask == 1).all()


def test_u_multiclass_exact():
    t = get_policy("U-MultiClass").targets(FRAME)
    np.testing.assert_array_equal(
        shown(t.values), [[1, 2, 0, 2], [0, 1, 2, 2], [2, 0, 0, 1], [0, 0, 1, 0], [2, 2, 1, 0]]
    )
    assert (t.mask == 1).all()
    t = get_policy("U-MultiClass", blank="ignore").targets(FRAME)
    np.testing.assert_array_equal(shown(t.mask), [[1, 1, 0, 1], [1, 1, 1, 1], [1, 0, 1, 1], [0, 1, 1, 1], [1, 1, 1, 0]])


def test_blank_ignore_exact():
    t = get_policy("U-Ones", blank="ignore").targets(FRAME)
    np.testing.assert_array_equal(
        shown(t.values), [[1, 1, 0, 1], [0, 1, 1, 1], [1, 0, 0, 1], [0, 0, 1, 0], [1, 1, 1, 0]]
    )
    np.testing.assert_array_equal(shown(t.mask), [[1, 1, 0, 1], [1, 1, 1, 1], [1, 0, 1, 1], [0, 1, 1, 1], [1, 1, 1, 0]])
    assert (t.mask[:, col("Fracture")] == 0).all()


def test_mixed_default_is_the_seed_mapping():
    assert len(ORIGINAL_MIXED_MAPPING) == 14 and ORIGINAL_MIXED_MAPPING["Edema"] == "U-Ones"
    assert sorted(k for k, v in ORIGINAL_MIXED_MAPPING.items() if v == "U-Ones") == sorted(
        ["Atelectasis", "Edema", "Pleural Effusion", "Lung Opacity", "Lung Lesion", "Fracture", "Support Devices"]
    )
    t = get_policy("mixed").targets(FRAME)
    np.testing.assert_array_equal(
        shown(t.values), [[1, 1, 0, 1], [0, 1, 1, 1], [0, 0, 0, 1], [0, 0, 1, 0], [0, 1, 1, 0]]
    )
    assert t.values[2, col("Cardiomegaly")] == 0 and t.values[0, col("Edema")] == 1


def test_mixed_mapping_checks():
    flipped = {k: "U-Zeros" if v == "U-Ones" else "U-Ones" for k, v in ORIGINAL_MIXED_MAPPING.items()}
    assert get_policy("mixed", mapping=flipped).targets(FRAME).values[2, col("Cardiomegaly")] == 1
    with pytest.raises(ValueError, match="Cardiomegally"):
        get_policy("mixed", mapping={**ORIGINAL_MIXED_MAPPING, "Cardiomegally": "U-Ones"})
    with pytest.raises(ValueError, match="U-Ignore"):
        get_policy("mixed", mapping={**ORIGINAL_MIXED_MAPPING, "Edema": "U-Ignore"})
    with pytest.raises(ValueError, match="Fracture.*Pneumonia|Pneumonia.*Fracture"):
        get_policy(
            "mixed", mapping={k: v for k, v in ORIGINAL_MIXED_MAPPING.items() if k not in ("Fracture", "Pneumonia")}
        )


def test_mixed_reads_a_mapping_file_like_the_one_05_writes(tmp_path):
    flipped = {k: "U-Zeros" if v == "U-Ones" else "U-Ones" for k, v in ORIGINAL_MIXED_MAPPING.items()}
    path = tmp_path / "mixed_mapping.json"
    path.write_text(json.dumps(flipped, indent=2))
    from_file = get_policy("mixed", mapping=str(path))
    assert from_file.mapping == flipped and from_file.options()["mapping"] == flipped
    np.testing.assert_array_equal(
        from_file.targets(FRAME).values, get_policy("mixed", mapping=flipped).targets(FRAME).values
    )


@pytest.mark.parametrize(
    "edit, pattern",
    [
        (lambda m: {**m, "Cardiomegally": "U-Ones"}, r"line 16: unknown observation 'Cardiomegally'"),
        (lambda m: {**m, "Edema": "U-Ignore"}, r"line 7: 'Edema' maps to 'U-Ignore'; expected U-Zeros or U-Ones"),
        (lambda m: {k: v for k, v in m.items() if k != "Fracture"}, "lacks observation.*'Fracture'"),
        (lambda m: [m], "line 1: expected a JSON object"),
    ],
)
def test_bad_mapping_file_is_a_data_error_naming_file_and_line(tmp_path, edit, pattern):
    path = tmp_path / "mapping.json"
    path.write_text(json.dumps(edit(dict(ORIGINAL_MIXED_MAPPING)), indent=1))
    with pytest.raises(DataError, match=pattern) as info:
        get_policy("mixed", mapping=path)
    assert str(path) in str(info.value)
    path.write_text('{"Edema": "U-Ones",\n "Fracture": }')
    with pytest.raises(DataError, match="line 2: not valid JSON"):
        get_policy("mixed", mapping=path)
    with pytest.raises(DataError, match="does not exist"):
        get_policy("mixed", mapping=tmp_path / "missing.json")


def test_training_config_records_the_mapping_the_file_held(tmp_path):
    from chexutils.training.config import make_config

    path = tmp_path / "mixed_mapping.json"
    path.write_text(json.dumps(ORIGINAL_MIXED_MAPPING))
    cfg = make_config(policy="mixed", policy_options={"mapping": str(path)})
    assert cfg.policy_options == {"mapping": dict(ORIGINAL_MIXED_MAPPING)}  # a changed file is a changed config


# ---- label smoothing ---------------------------------------------------------------------------


def big_frame(n=400, seed=0):
    rng = np.random.default_rng(seed)
    return make_frame({name: rng.choice([1.0, 0.0, -1.0, NAN], n) for name in OBSERVATIONS})


@pytest.mark.parametrize("name, low, high", [("U-LSR-Zeros", 0.0, 0.3), ("U-LSR-Ones", 0.55, 0.85)])
def test_lsr_range_determinism_and_independence(name, low, high):
    frame = big_frame()
    uncertain = frame[list(OBSERVATIONS)].to_numpy() == -1
    t = get_policy(name).targets(frame)
    drawn = t.values[uncertain]
    assert ((drawn >= low) & (drawn <= high)).all() and (t.mask == 1).all()
    assert drawn.std() > 0.05 and len(np.unique(drawn)) > 0.9 * len(drawn)  # spread over the range
    assert abs(drawn.mean() - (low + high) / 2) < 0.02
    np.testing.assert_array_equal(get_policy(name).targets(frame).values, t.values)
    order = np.random.default_rng(1).permutation(len(frame))[:150]
    np.testing.assert_array_equal(get_policy(name).targets(frame.iloc[order]).values, t.values[order])
    other = get_policy(name, seed=1).targets(frame).values[uncertain]
    assert (other != drawn).mean() > 0.9
    assert (get_policy(name, seed=1).describe()["seed"], get_policy(name).describe()["low"]) == (1, low)


def test_lsr_range_options():
    t = get_policy("U-LSR-Ones", low=0.7, high=0.7).targets(FRAME)
    assert np.allclose(t.values[RAW == -1], 0.7)
    with pytest.raises(ValueError, match="low"):
        get_policy("U-LSR-Zeros", low=0.5, high=0.2)


# ---- self-training -----------------------------------------------------------------------------


def test_self_trained_soft_and_hard_exact():
    teacher = teacher_frame(FRAME)
    probs = teacher[list(OBSERVATIONS)].to_numpy()
    soft = get_policy("U-SelfTrained", teacher_predictions=teacher).targets(FRAME)
    unc = RAW == -1
    np.testing.assert_allclose(soft.values[unc], probs[unc], rtol=1e-6)
    np.testing.assert_array_equal(soft.values[~unc], np.nan_to_num(RAW[~unc]))
    hard = get_policy("U-SelfTrained", teacher_predictions=teacher, hard=True).targets(FRAME)
    np.testing.assert_array_equal(hard.values[unc], (probs[unc] >= 0.5).astype(np.float32))
    assert set(np.unique(hard.values[unc])) == {0.0, 1.0}


def test_self_trained_joins_by_path(tmp_path):
    teacher = teacher_frame(FRAME)
    expected = get_policy("U-SelfTrained", teacher_predictions=teacher).targets(FRAME).values
    shuffled = teacher.sample(frac=1.0, random_state=3)
    assert not shuffled["Path"].equals(teacher["Path"])
    shuffled = shuffled[["Path", *reversed(OBSERVATIONS)]]  # column order does not matter either
    np.testing.assert_array_equal(
        get_policy("U-SelfTrained", teacher_predictions=shuffled).targets(FRAME).values, expected
    )
    shuffled.to_csv(tmp_path / "predictions_train.csv", index=False)
    policy = get_policy("U-SelfTrained", teacher=tmp_path)
    np.testing.assert_allclose(policy.targets(FRAME).values, expected, rtol=1e-6)
    assert policy.describe()["teacher"] == str(tmp_path)


def test_self_trained_errors(tmp_path):
    teacher = teacher_frame(FRAME)
    with pytest.raises(DataError, match="predictions_train.csv"):
        get_policy("U-SelfTrained", teacher=tmp_path / "no-run")
    teacher.drop(columns="Edema").to_csv(tmp_path / "predictions_train.csv", index=False)
    with pytest.raises(DataError, match=r"predictions_train.csv.*'Edema'"):
        get_policy("U-SelfTrained", teacher=tmp_path)
    with pytest.raises(DataError, match=r"3 image Path.*patient00002"):
        get_policy("U-SelfTrained", teacher_predictions=teacher.iloc[[0, 3]]).targets(FRAME)
    # a row without uncertain labels needs no teacher prediction
    get_policy("U-SelfTrained", teacher_predictions=teacher.drop(index=3)).targets(FRAME)
    with pytest.raises(DataError, match="duplicate"):
        get_policy("U-SelfTrained", teacher_predictions=pd.concat([teacher, teacher.iloc[:1]]))
    bad = teacher.copy()
    bad.loc[1, "Edema"] = 1.5
    with pytest.raises(DataError, match="Edema"):
        get_policy("U-SelfTrained", teacher_predictions=bad)
    with pytest.raises(ValueError, match="exactly one"):
        get_policy("U-SelfTrained")


# ---- losses ------------------------------------------------------------------------------------


def test_binary_masked_loss_matches_hand_computation():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 14, generator=gen)
    values = torch.rand(6, 14, generator=gen)  # soft targets
    mask = (torch.rand(6, 14, generator=gen) > 0.4).float()
    keep = mask.bool()
    expected = F.binary_cross_entropy_with_logits(logits[keep], values[keep])
    torch.testing.assert_close(masked_loss(logits, values, mask, "binary"), expected)


def test_multiclass_masked_loss_matches_hand_computation():
    t = get_policy("U-MultiClass", blank="ignore").targets(FRAME)
    logits = torch.randn(ROWS, 14, 3, generator=torch.Generator().manual_seed(1), requires_grad=True)
    keep = torch.as_tensor(t.mask).bool()
    expected = F.cross_entropy(logits[keep], torch.as_tensor(t.values)[keep])
    loss = masked_loss(logits, t.values, t.mask, "multiclass")  # numpy targets are accepted
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert torch.isfinite(logits.grad).all()


def test_fully_masked_batch_is_zero_not_nan():
    for head, shape, values in (
        ("binary", (3, 14), torch.full((3, 14), float("nan"))),
        ("multiclass", (3, 14, 3), torch.full((3, 14), -1)),
    ):
        logits = torch.randn(shape, requires_grad=True)
        loss = masked_loss(logits, values, torch.zeros(3, 14), head)
        loss.backward()
        assert loss.item() == 0.0 and torch.isfinite(logits.grad).all()


def test_probabilities():
    logits = torch.tensor([[[2.0, -1.0, 50.0], [0.0, 0.0, -30.0]], [[900.0, 1000.0, 5000.0], [-800.0, -805.0, 0.0]]])
    expected = torch.exp(logits[..., 1]) / (torch.exp(logits[..., 0]) + torch.exp(logits[..., 1]))
    p = probabilities(logits, "multiclass")
    torch.testing.assert_close(p[0], expected[0])
    torch.testing.assert_close(p[1], torch.tensor([1.0, 1 / (1 + np.exp(5.0))], dtype=p.dtype))  # exp overflows naively
    assert torch.isfinite(p).all()
    changed = logits.clone()
    changed[..., 2] = -changed[..., 2]
    torch.testing.assert_close(probabilities(changed, "multiclass"), p)
    binary = torch.tensor([[-3.0, 0.0, 4.0]])
    torch.testing.assert_close(probabilities(binary, "binary"), torch.sigmoid(binary))


def test_unknown_head_and_bad_shapes():
    with pytest.raises(ValueError, match="head"):
        probabilities(torch.zeros(2, 14), "ternary")
    with pytest.raises(ValueError, match="head"):
        masked_loss(torch.zeros(2, 14), torch.zeros(2, 14), torch.ones(2, 14), "ternary")
    with pytest.raises(ValueError, match="shape"):
        masked_loss(torch.zeros(2, 14), torch.zeros(2, 14, dtype=torch.long), torch.ones(2, 14), "multiclass")


@pytest.mark.parametrize("name, low, high", [("U-LSR-Zeros", 0.0, 0.3), ("U-LSR-Ones", 0.55, 0.85)])
def test_lsr_draws_reach_both_published_bounds(name, low, high):
    """Pham et al. 2020: U(0, 0.3) and U(0.55, 0.85); with ~1,400 draws the extremes sit within 0.005."""
    frame = big_frame(n=1000, seed=2)
    uncertain = frame[list(OBSERVATIONS)].to_numpy() == -1
    drawn = get_policy(name).targets(frame).values[uncertain]
    assert len(drawn) > 1000
    assert low <= drawn.min() < low + 0.005 and high - 0.005 < drawn.max() <= high
