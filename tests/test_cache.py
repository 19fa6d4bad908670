"""Image cache: equals the plain loader, reused, invalidated, resumable, corrupt images named."""

import numpy as np
import pytest
import torch
from conftest import chexpert_rows, write_chexpert
from PIL import Image
from torchvision import transforms

from chexutils.core.errors import DataError
from chexutils.data import cache as cache_module
from chexutils.data.cache import load_resized, open_cache
from chexutils.data.chexpert import read_chexpert
from chexutils.data.loader import BatchLoader, ResizedImages, epoch_batches


@pytest.fixture
def frame(tiny_phantom):
    return read_chexpert(tiny_phantom / "train.csv").head(40)


def test_cached_pixels_equal_the_usual_torchvision_loader(frame, tmp_path):
    cache = open_cache(frame, 48, tmp_path, workers=1)
    usual = transforms.Compose([transforms.Resize((48, 48)), transforms.ToTensor()])
    for row in (0, 17, 39):
        expected = usual(Image.open(frame["image"].iloc[row]).convert("RGB"))
        assert torch.equal(expected[0], expected[2])  # grayscale: every channel the same
        np.testing.assert_array_equal(cache.images[row], (expected[0] * 255).round().to(torch.uint8).numpy())


def test_reused_when_nothing_changed_and_rebuilt_when_anything_did(frame, tmp_path):
    first = open_cache(frame, 32, tmp_path, workers=1)
    stamp = (first.folder / "images.npy").stat().st_mtime_ns
    again = open_cache(frame, 32, tmp_path, workers=1)
    assert again.folder == first.folder and (again.folder / "images.npy").stat().st_mtime_ns == stamp
    other_size = open_cache(frame, 40, tmp_path, workers=1)
    other_list = open_cache(frame.iloc[1:], 32, tmp_path, workers=1)
    other_method = open_cache(frame, 32, tmp_path, method="area", workers=1)
    assert len({first.folder, other_size.folder, other_list.folder, other_method.folder}) == 4
    np.testing.assert_array_equal(other_list.images[0], first.images[1])
    assert other_size.images.shape == (len(frame), 40, 40)


def test_parallel_build_equals_serial_build(frame, tmp_path):
    serial = open_cache(frame, 32, tmp_path / "a", workers=1)
    parallel = open_cache(frame, 32, tmp_path / "b", workers=2)
    np.testing.assert_array_equal(serial.images, parallel.images)


def test_corrupt_image_is_named_and_the_build_resumes_after_the_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(cache_module, "CHUNK", 2)
    csv_path = write_chexpert(tmp_path, chexpert_rows(6))
    frame = read_chexpert(csv_path)
    bad = frame["image"].iloc[4]
    good_bytes = open(bad, "rb").read()
    open(bad, "wb").write(good_bytes[:40])
    with pytest.raises(DataError, match=rf"{bad}.*corrupt or truncated.*CSV line 6"):
        open_cache(frame, 16, tmp_path / "cache", workers=1)
    open(bad, "wb").write(good_bytes)
    calls = []
    real = cache_module.load_resized
    monkeypatch.setattr(cache_module, "load_resized", lambda *a: calls.append(a[0]) or real(*a))
    cache = open_cache(frame, 16, tmp_path / "cache", workers=1)
    assert calls == list(frame["image"].iloc[4:])  # rows 0-3 were kept from the interrupted build
    for row in range(6):
        np.testing.assert_array_equal(cache.images[row], load_resized(frame["image"].iloc[row], 16))
    assert not (cache.folder / "filled.npy").exists()


def test_batches_read_in_any_order_keep_their_rows(frame, tmp_path):
    cache = open_cache(frame, 24, tmp_path, workers=1)
    rows = np.array([9, 2, 30, 2])
    batch = cache.read(rows)
    assert batch.shape == (4, 1, 24, 24) and batch.dtype == np.uint8
    for i, r in enumerate(rows):
        np.testing.assert_array_equal(batch[i, 0], cache.images[r])


def test_epoch_batches_shuffle_per_epoch_and_shard_across_ranks():
    a, b = epoch_batches(50, 8, True, seed=1, epoch=0), epoch_batches(50, 8, True, seed=1, epoch=0)
    assert all((x == y).all() for x, y in zip(a, b))
    assert not np.array_equal(np.concatenate(a), np.concatenate(epoch_batches(50, 8, True, seed=1, epoch=1)))
    assert sorted(np.concatenate(a)) == list(range(50))
    shards = [np.concatenate(epoch_batches(50, 8, True, 1, 0, rank=r, world=2)) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 25
    assert set(shards[0]) | set(shards[1]) == set(range(50))
    assert [len(x) for x in epoch_batches(50, 8, False, 0, 0, drop_last=True)] == [8] * 6


@pytest.mark.parametrize("workers", [0, 2])
def test_cache_and_jpeg_loaders_yield_the_same_batches(frame, tmp_path, workers):
    cache = open_cache(frame, 32, tmp_path, workers=1)
    from_cache = list(BatchLoader(cache, 16, shuffle=True, seed=3, workers=workers))
    from_jpeg = list(BatchLoader(ResizedImages(frame["image"], 32), 16, shuffle=True, seed=3, workers=workers))
    assert len(from_cache) == len(from_jpeg) == 3
    for (ci, cr), (ji, jr) in zip(from_cache, from_jpeg):
        assert torch.equal(cr, jr) and torch.equal(ci, ji) and ci.dtype == torch.uint8


def test_stopping_early_does_not_hang(frame, tmp_path):
    loader = BatchLoader(open_cache(frame, 16, tmp_path, workers=1), 4, shuffle=True)
    for i, _ in enumerate(loader):
        if i == 1:
            break
    assert len(list(loader)) == len(loader) == 10
