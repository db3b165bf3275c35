"""Convolutional caching (qoeflow/lifecycle/caching.py): exact with the true mask, detectors, expiry, bad input."""

import pytest
import torch
from torch import nn

from qoeflow.lifecycle import caching
from qoeflow.models import build_model


def _frames(n: int, size: int = 64, block: int = 16, seed: int = 0) -> list[torch.Tensor]:
    """A random frame, then frames in which a few random blocks get new pixels (the rest identical)."""
    gen = torch.Generator().manual_seed(seed)
    frames = [torch.rand(1, 3, size, size, generator=gen)]
    grid = size // block
    for _ in range(n - 1):
        frame = frames[-1].clone()
        for cell in torch.randperm(grid * grid, generator=gen)[:int(torch.randint(0, 4, (1,), generator=gen))]:
            r, c = divmod(int(cell), grid)
            frame[..., r * block:(r + 1) * block, c * block:(c + 1) * block] = torch.rand(1, 3, block, block,
                                                                                         generator=gen)
        frames.append(frame)
    return frames


def _trained_like(model: nn.Module) -> nn.Module:
    """Random weights and non-trivial batch-norm statistics, in eval mode."""
    torch.manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.2, 0.2)
    return model.eval()


@pytest.mark.parametrize("name,n_convs", [("mcnn", 1), ("mcnn", 3), ("csrnet", 1), ("csrnet", 4), ("csrnet", 8), ("vggdecoder", 3),
                                          ("resnet", 1), ("resnet", 3), ("resnet", 6)])
def test_true_mask_reproduces_full_recomputation(name, n_convs):
    torch.manual_seed(0)
    model = _trained_like(build_model("crowd", name))
    cache = caching.ConvCache(model, n_convs, (4, 4), caching.exact_detector)
    reused = 0
    with torch.no_grad():
        for frame in _frames(8):
            out, step = cache(frame)
            torch.testing.assert_close(out, model(frame), rtol=1e-4, atol=1e-5)
            reused += step.reused
    assert reused > 0  # the cache was really used, not recomputed throughout
    assert not any(m.training for m in model.modules())  # counting MACs or splitting left batch norm in eval mode


def test_prefix_holds_the_first_n_convolutions():
    model = build_model("crowd", "resnet")
    prefix, suffix, convs = caching.split_prefix(model, 2)
    assert len(prefix) == 2 and convs == 3  # the stem and the first residual block (two convs, identity shortcut)
    assert len(prefix) + len(suffix) == len(model)


def test_receptive_field_of_known_stacks():
    conv = nn.Conv2d(1, 1, 3, padding=1)
    assert caching.receptive_field(conv) == caching.Field(1, -1, 1)
    stack = nn.Sequential(conv, nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(1, 1, 3, padding=2, dilation=2))
    field = caching.receptive_field(stack)
    assert field.stride == 2 and field.lo == -1 - 4 and field.hi == 2 + 4
    assert field.halo % field.stride == 0 and field.halo >= 5


def test_histogram_distance():
    flat = torch.zeros(3, 8, 8)
    assert not caching.histogram_detector(8, 0.01)(flat, flat.clone(), (2, 2)).any()
    bright = flat.clone()
    bright[:, :4, :4] = 1.0  # one block moves all its mass to the top bin: distance 1
    dist = caching.chi_square(caching.block_histograms(bright, (2, 2), 8), caching.block_histograms(flat, (2, 2), 8))
    assert dist[0, 0] == pytest.approx(1.0) and dist.flatten()[1:].eq(0).all()


def test_histogram_ignores_a_shuffle_that_pixels_see():
    """The histogram test is blind to pixels that move within a block; the pixel test is not."""
    frame = torch.rand(1, 8, 8)
    shuffled = frame.flatten()[torch.randperm(64)].reshape(1, 8, 8)
    assert not caching.histogram_detector(4, 1e-6)(shuffled, frame, (1, 1)).any()
    assert caching.pixel_detector(0.1)(shuffled, frame, (1, 1)).all()


def test_expired_blocks_are_recomputed_every_max_age_frames():
    model = _trained_like(build_model("crowd", "csrnet"))
    cache = caching.ConvCache(model, 2, (2, 2), lambda f, r, g: torch.zeros(g, dtype=torch.bool), max_age=3)
    frame = torch.rand(1, 3, 32, 32)
    expired = [cache(frame)[1].expired for _ in range(7)]
    assert expired == [0, 0, 0, 4, 0, 0, 4]


def test_row_rectangles_merge_equal_runs():
    mask = torch.tensor([[1, 1, 0, 1], [1, 1, 0, 0], [0, 0, 0, 1]], dtype=torch.bool)
    assert sorted(caching.row_rectangles(mask)) == [(0, 1, 3, 4), (0, 2, 0, 2), (2, 3, 3, 4)]


@pytest.mark.parametrize("call,message", [
    (lambda: caching.block_histograms(torch.rand(3, 64, 64), (5, 5), 8), "does not divide"),
    (lambda: caching.block_histograms(torch.rand(3, 64, 64), (4, 4), 1), "at least 2 bins"),
    (lambda: caching.histogram_detector(1, 0.01), "at least 2 bins"),
    (lambda: caching.histogram_detector(8, 2.0), r"\[0, 1\]"),
    (lambda: caching.ConvCache(build_model("crowd", "csrnet"), 99, (4, 4), caching.exact_detector), "n_convs"),
    (lambda: caching.ConvCache(build_model("crowd", "csrnet"), 2, (4, 4), caching.exact_detector, 0), "max_age"),
    (lambda: caching.ConvCache(build_model("crowd", "vggdecoder"), 5, (4, 4), caching.exact_detector), "see through"),
    (lambda: caching.ConvCache(nn.Conv2d(3, 1, 3), 1, (4, 4), caching.exact_detector), "nn.Sequential"),
    (lambda: caching.ConvCache(build_model("crowd", "csrnet"), 5, (8, 8), caching.exact_detector)(
        torch.rand(1, 3, 48, 48)), "multiples of the cached layers' stride"),
])
def test_bad_input_is_refused_clearly(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_a_still_noise_free_clip_is_served_from_the_cache():
    """Nothing moves and the camera adds nothing: every block after the first frame is a hit, the counts
    equal full recomputation's, and the MACs skipped are the cached layers' whole share."""
    from qoeflow.data.video import Motion, crowd_clip
    from qoeflow.models.caching_bench import CacheSettings, evaluate_clip

    clip = crowd_clip("still", 6, 64, 64, Motion(20, 0.0, 0.0, 0.0), noise=0.0, drift=0.0)
    settings = CacheSettings(n_convs=2, grid=(4, 4), bins=8, threshold=1e-9, pixel_threshold=0.0, max_age=None)
    row = evaluate_clip(_trained_like(build_model("crowd", "csrnet")), clip.frames, clip.clean, clip.counts(), settings)
    for prefix in ("", "pixel_"):
        assert row[prefix + "hit_rate"] == 1.0 and row[prefix + "output_difference"] == 0.0
        assert row[prefix + "macs_skipped"] == pytest.approx(row["prefix_mac_share"])
        assert row[prefix + "recall"] != row[prefix + "recall"]  # no block truly changed: recall undefined (NaN)


def test_moving_heads_are_found_by_both_detectors():
    """Heads walking on a noise-free clip: the pixel test at the truth's own threshold (more than two grey
    levels) names exactly the truly changed blocks; the histogram test finds most of them."""
    from qoeflow.data.video import Motion, crowd_clip
    from qoeflow.models.caching_bench import CacheSettings, evaluate_clip

    clip = crowd_clip("busy", 6, 64, 64, Motion(20, 1.0, 2.0, 0.0), noise=0.0, drift=0.0)
    settings = CacheSettings(n_convs=2, grid=(4, 4), bins=64, threshold=1e-9, pixel_threshold=0.008, max_age=None)
    row = evaluate_clip(_trained_like(build_model("crowd", "csrnet")), clip.frames, clip.clean, clip.counts(), settings)
    assert row["pixel_recall"] == 1.0 and row["pixel_precision"] == 1.0
    assert row["recall"] > 0.5 and row["hit_rate"] < 1.0
