"""Datasets: shapes, value ranges, determinism, splits, and exact crowd density maps."""

import numpy as np
import pytest
import torch

from qoeflow.data import Split, load_split
from qoeflow.data.crowd import crowd_split
from qoeflow.data.digits import digits_split
from qoeflow.data.digits import stratified_parts

SMALL_CROWD = dict(n_train=6, n_val=3, n_test=3, size=32, min_count=5, max_count=40, seed=3)


@pytest.fixture(scope="module")
def digits() -> Split:
    return digits_split()


@pytest.fixture(scope="module")
def crowd() -> Split:
    return crowd_split(**SMALL_CROWD)


def test_digits_shapes_types_and_range(digits):
    total = 0
    for name in ("train", "val", "test"):
        x, y = digits.part(name)
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.shape[1:] == (1, 32, 32) and len(x) == len(y)
        assert 0.0 <= x.min() and x.max() <= 1.0 and x.max() > 0.9
        assert set(y.tolist()) == set(range(10))  # stratified: every class in every part
        total += len(x)
    assert total == 1797 and digits.task == "digits"
    assert abs(len(digits.x_test) / total - 0.2) < 0.01 and abs(len(digits.x_val) / total - 0.2) < 0.01


def test_digits_native_size_is_the_raw_images_scaled():
    from sklearn.datasets import load_digits

    split = digits_split(size=8, val_fraction=0.0, test_fraction=0.0)
    raw = {tuple(img.ravel()) for img in load_digits().images / 16.0}
    assert len(split.x_train) == 1797
    assert all(tuple(img.ravel()) in raw for img in split.x_train[:50].double().numpy())


def test_digits_deterministic_by_seed(digits):
    again = digits_split()
    assert torch.equal(digits.x_train, again.x_train) and torch.equal(digits.y_val, again.y_val)
    other = digits_split(seed=1)
    assert not torch.equal(digits.y_train, other.y_train)


def test_stratified_parts_disjoint_and_limited():
    labels = np.repeat(np.arange(10), 30)
    train, val, test = stratified_parts(labels, (0.2, 0.2), seed=0)
    joined = np.concatenate([train, val, test])
    assert len(joined) == 300 and len(set(joined.tolist())) == 300
    assert (np.bincount(labels[test]) == 6).all()
    train, val, test = stratified_parts(labels, (0.2, 0.2), seed=0, limit=50)
    assert len(train) + len(val) + len(test) == 50 and len(set(labels[train].tolist())) == 10


def test_digits_limit_caps_total():
    split = digits_split(limit=100, size=16)
    assert len(split.x_train) + len(split.x_val) + len(split.x_test) == 100
    assert split.x_train.shape[1:] == (1, 16, 16)


def test_crowd_shapes_counts_and_exact_density(crowd):
    for name in ("train", "val", "test"):
        x, y = crowd.part(name)
        counts = crowd.counts[name]
        assert x.dtype == torch.float32 and x.shape[1:] == (3, 32, 32)
        assert 0.0 <= x.min() and x.max() <= 1.0
        assert y.shape == (len(x), 1, 8, 8) and (y >= 0).all()
        assert counts.dtype == torch.int64 and ((counts >= 5) & (counts <= 40)).all()
        torch.testing.assert_close(y.sum(dim=(1, 2, 3)), counts.float(), atol=1e-4, rtol=0)
    assert [len(crowd.x_train), len(crowd.x_val), len(crowd.x_test)] == [6, 3, 3] and crowd.task == "crowd"


def test_crowd_people_are_drawn_where_the_density_is():
    empty = crowd_split(**{**SMALL_CROWD, "min_count": 0, "max_count": 0})
    full = crowd_split(**{**SMALL_CROWD, "min_count": 30, "max_count": 30})
    assert empty.y_train.sum() == 0
    # same seed, same background: the change is the rendered people, and it lies where the density is
    change = torch.nn.functional.avg_pool2d((full.x_train - empty.x_train).abs().amax(dim=1, keepdim=True), 4)
    for drawn, density in zip(change, full.y_train):
        assert torch.corrcoef(torch.stack([drawn.flatten(), density.flatten()]))[0, 1] > 0.4


def test_crowd_deterministic_and_parts_independent(crowd):
    again = crowd_split(**SMALL_CROWD)
    assert torch.equal(crowd.x_train, again.x_train) and torch.equal(crowd.y_test, again.y_test)
    assert not torch.equal(crowd.x_train, crowd_split(**{**SMALL_CROWD, "seed": 4}).x_train)
    bigger = crowd_split(**{**SMALL_CROWD, "n_train": 9})
    assert torch.equal(bigger.x_val, crowd.x_val) and torch.equal(bigger.x_train[:6], crowd.x_train)


def test_crowd_rejects_bad_stride():
    with pytest.raises(ValueError, match="density_stride"):
        crowd_split(size=30, density_stride=4)


def test_load_split_dispatch():
    split = load_split("digits", limit=30)
    assert split.task == "digits" and len(split.x_train) + len(split.x_val) + len(split.x_test) == 30
    with pytest.raises(ValueError, match="digits, crowd"):
        load_split("imagenet")
    with pytest.raises(ValueError, match="unknown part"):
        split.part("holdout")
