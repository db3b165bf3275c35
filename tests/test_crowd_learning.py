"""Crowd models learn (issue 11, item 5): zero-started density heads, mirrored training scenes, BatchNorm
statistics recomputed after each epoch, and a short training run that clearly beats the median count."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from qoeflow.data.crowd import crowd_split
from qoeflow.data.digits import digits_split
from qoeflow.lifecycle.training import JobSpec, TrainingJob, _flip
from qoeflow.models import build_model


@pytest.fixture(scope="module")
def crowd():
    return crowd_split(n_train=128, n_val=8, n_test=32, size=64)


@pytest.mark.parametrize("name", ["mcnn", "csrnet", "vggdecoder", "resnet"])
def test_fresh_crowd_models_predict_an_empty_map(name):
    torch.manual_seed(0)
    model = build_model("crowd", name, size=32).eval()
    with torch.no_grad():
        assert torch.count_nonzero(model(torch.rand(2, 3, 32, 32))) == 0


def test_flip_mirrors_images_and_maps_together():
    x, y = torch.rand(3, 3, 8, 8), torch.rand(3, 1, 2, 2)
    flips = torch.tensor([[False, False], [True, False], [True, True]])
    fx, fy = _flip(x, y, flips)
    assert torch.equal(fx[0], x[0]) and torch.equal(fy[0], y[0])
    assert torch.equal(fx[1], x[1].flip(-1)) and torch.equal(fy[1], y[1].flip(-1))
    assert torch.equal(fx[2], x[2].flip(-1).flip(-2)) and torch.equal(fy[2], y[2].flip(-1).flip(-2))
    assert torch.allclose(fy.sum(dim=(1, 2, 3)), y.sum(dim=(1, 2, 3)))


def test_density_epoch_recomputes_batchnorm_statistics(crowd):
    job = TrainingJob(JobSpec("c", "crowd", "resnet", epochs=1, batch_size=16), crowd, device="cpu")
    job.train_epoch()
    stem = job.model[0][1]  # the stem's BatchNorm sees the images after its convolution only
    assert isinstance(stem, nn.BatchNorm2d) and stem.momentum == 0.1  # momentum restored
    with torch.no_grad():
        features = job.model[0][0](crowd.x_train)
    assert torch.allclose(stem.running_mean, features.mean(dim=(0, 2, 3)), atol=1e-4)


def test_classification_draws_no_flips():
    split = digits_split(size=16, limit=200)
    job = TrainingJob(JobSpec("d", "digits", "mlp", epochs=1), split, device="cpu")
    assert job._flips(len(split.x_train)) is None


def test_crowd_model_beats_the_median_count(crowd):
    torch.set_num_threads(1)
    median = crowd.counts["train"].double().median()
    baseline = (crowd.counts["test"].double() - median).abs().mean().item()
    job = TrainingJob(JobSpec("c", "crowd", "vggdecoder", epochs=4, batch_size=8, lr=5e-4), crowd, device="cpu")
    job.run()
    assert job.evaluate(crowd.x_test, crowd.y_test)["mae"] < 0.8 * baseline  # 0.65× measured (1.5 s)
