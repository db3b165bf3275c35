"""Tucker-2 decomposition of convolutions (qoeflow/lifecycle/decomposition.py): exact at full rank, ranks
from the double binary search grow with the variance target, fewer MACs at reduced rank, agreement with
TensorLy, decomposed zoo models that save and load, and clear errors for bad input."""

import math

import pytest
import torch
from torch import nn

from qoeflow.lifecycle.decomposition import (choose_ranks, decompose, fine_tune, hosvd, mode_spectrum,
                                             relative_error, retained_variance, smallest_rank, tensorly_error,
                                             tucker2_conv)
from qoeflow.models import build_model
from qoeflow.models.arch import describe, read_model, save_model
from qoeflow.models.macs import count_macs

torch.set_num_threads(1)


def low_rank_weight(n=24, c=16, k=3, rank=6, noise=0.05, seed=0) -> torch.Tensor:
    """A weight of (nearly) low rank in both channel modes, like a trained layer's."""
    g = torch.Generator().manual_seed(seed)
    core = torch.randn(rank, rank, k, k, generator=g)
    u, v = torch.randn(n, rank, generator=g), torch.randn(c, rank, generator=g)
    w = torch.einsum("abij,na,cb->ncij", core, u, v)
    return w + noise * w.std() * torch.randn(w.shape, generator=g)


@pytest.mark.parametrize("kwargs", [
    dict(kernel_size=3, stride=2, padding=1, bias=True),
    dict(kernel_size=3, stride=1, padding=2, dilation=2, bias=True),
    dict(kernel_size=5, stride=2, padding=0, dilation=1, bias=False),
    dict(kernel_size=(3, 5), stride=(1, 2), padding=(1, 2), bias=True, padding_mode="reflect"),
])
def test_full_rank_reproduces_the_layer(kwargs):
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 10, **kwargs)
    seq, factors = tucker2_conv(conv, variance=1.0)
    assert factors.ranks == (6, 10)
    assert [type(m) for m in seq] == [nn.Conv2d] * 3
    first, core, last = seq
    assert first.kernel_size == last.kernel_size == (1, 1) and first.stride == last.stride == (1, 1)
    assert (core.stride, core.padding, core.dilation) == (conv.stride, conv.padding, conv.dilation)
    assert (first.bias is None, core.bias is None, last.bias is None) == (True, True, conv.bias is None)
    x = torch.randn(3, 6, 13, 15)
    with torch.no_grad():
        assert torch.allclose(seq(x), conv(x), atol=1e-5, rtol=1e-4)
    assert relative_error(conv.weight, factors.reconstruct()) < 1e-6


def test_binary_search_finds_the_smallest_rank_and_ranks_grow_with_variance():
    w = low_rank_weight()
    s_in, s_out = mode_spectrum(w, 1), mode_spectrum(w, 0)
    previous = (0, 0)
    for v in [0.05, 0.2, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999, 1.0]:
        ranks = choose_ranks(w, v)
        assert ranks[0] >= previous[0] and ranks[1] >= previous[1]
        previous = ranks
        for s, dim, r in [(s_in, 16, ranks[0]), (s_out, 24, ranks[1])]:
            linear = next(r for r in range(1, dim + 1) if retained_variance(s, r) >= v)
            assert r == linear == smallest_rank(s, v, dim)
    assert choose_ranks(w, 0.99) == (6, 6)  # the planted rank: everything but the noise (0.25 % of the energy)
    assert choose_ranks(w, 1.0) == (16, 24)


@pytest.mark.parametrize("variance", [0.5, 0.8, 0.95])
def test_error_is_bounded_by_the_discarded_energy(variance):
    torch.manual_seed(1)
    w = nn.Conv2d(16, 24, 3).weight  # random: high rank, the hard case
    factors = hosvd(w, choose_ranks(w, variance))
    assert relative_error(w, factors.reconstruct()) ** 2 <= 2 * (1 - variance) + 1e-9


@pytest.mark.parametrize("ranks", [(4, 5), (6, 6), (10, 12), (16, 24)])
def test_our_error_agrees_with_tensorly(ranks):
    w = low_rank_weight(noise=0.3)
    ours = relative_error(w, hosvd(w, ranks).reconstruct())
    theirs = tensorly_error(w, ranks)
    assert theirs <= ours + 1e-6  # HOOI starts from the HOSVD and does not get worse
    assert ours - theirs < 0.01


def test_reduced_rank_lowers_macs_and_strided_first_factor_runs_at_input_resolution():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(32, 48, 3, stride=2, padding=1, bias=True), nn.ReLU())
    new, [report] = decompose(model, 0.6, input_shape=(32, 16, 16))
    c, n = report.ranks
    assert c < 32 and n < 48 and report.decomposed
    assert report.macs_before == 48 * 32 * 9 * 8 * 8 == count_macs(model, (32, 16, 16))
    assert report.macs_after == report.candidate_macs == c * 32 * 16 * 16 + n * c * 9 * 8 * 8 + 48 * n * 8 * 8
    assert report.macs_after < report.macs_before and count_macs(new, (32, 16, 16)) == report.macs_after
    assert isinstance(model[0], nn.Conv2d)  # the input model is left as it was
    assert isinstance(new[0], nn.Sequential) and new[0][2].bias is not None
    assert math.isfinite(report.error_tensorly) and abs(report.error - report.error_tensorly) < 0.05


def test_a_layer_is_kept_where_decomposition_would_cost_more():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.Conv2d(16, 16, 3, padding=1))
    new, reports = decompose(model, 1.0, input_shape=(1, 8, 8), cross_check=False)
    assert [r.decomposed for r in reports] == [False, False]  # full rank: more MACs than the original
    assert all(r.macs_after == r.macs_before < r.candidate_macs for r in reports)
    assert all(isinstance(m, nn.Conv2d) for m in new)
    assert math.isnan(reports[0].error_tensorly)
    new, reports = decompose(model, 0.5, input_shape=(1, 8, 8), skip=["0"], cross_check=False)
    assert [r.name for r in reports] == ["1"] and isinstance(new[0], nn.Conv2d)


@pytest.mark.parametrize("name", ["vgg", "resnet"])
def test_decomposed_zoo_model_runs_and_round_trips(tmp_path, name):
    torch.manual_seed(0)
    model = build_model("digits", name).eval()
    new, reports = decompose(model, 0.7, input_shape=(1, 32, 32))
    assert len(reports) == (5 if name == "vgg" else 7) and all(r.decomposed for r in reports)
    assert count_macs(new, (1, 32, 32)) < count_macs(model, (1, 32, 32))
    assert all(abs(r.error - r.error_tensorly) < 0.05 for r in reports)
    x = torch.rand(4, 1, 32, 32)
    out = new.eval()(x)
    assert out.shape == (4, 10) and torch.isfinite(out).all()
    path = tmp_path / "tucker.pt"
    save_model(new, path, {"variance": 0.7})
    torch.load(path, weights_only=True)
    again, meta = read_model(path)
    assert meta == {"variance": 0.7} and describe(again) == describe(new)
    with torch.no_grad():
        assert torch.allclose(again(x), out, atol=1e-6)
    losses = fine_tune(new, x, torch.arange(4), epochs=1, batch_size=2)
    assert len(losses) == 1 and math.isfinite(losses[0])


@pytest.mark.parametrize("variance", [0, 0.0, -0.1, 1.01, 2, math.nan, math.inf, True, "0.9", None])
def test_variance_outside_the_unit_interval_is_refused(variance):
    model = nn.Sequential(nn.Conv2d(4, 4, 3))
    with pytest.raises(ValueError, match=r"variance must be a number in \(0, 1\].*got " + repr(variance)[:3]):
        decompose(model, variance, input_shape=(4, 8, 8))
    with pytest.raises(ValueError, match="variance"):
        tucker2_conv(model[0], variance=variance)


def test_other_bad_input_is_refused():
    with pytest.raises(ValueError, match="no k×k convolution"):
        decompose(build_model("digits", "mlp"), 0.9, input_shape=(1, 32, 32))
    with pytest.raises(ValueError, match="no k×k convolution"):
        decompose(nn.Sequential(nn.Conv2d(4, 8, 1), nn.Conv2d(8, 8, 3, groups=8)), 0.9, input_shape=(4, 8, 8))
    with pytest.raises(ValueError, match="no k×k convolution.*skip"):
        decompose(nn.Sequential(nn.Conv2d(4, 8, 3)), 0.9, input_shape=(4, 8, 8), skip=["0"])
    with pytest.raises(ValueError, match="k×k convolution with k > 1"):
        tucker2_conv(nn.Conv2d(4, 8, 1), variance=0.9)
    with pytest.raises(ValueError, match="exactly one of variance or ranks"):
        tucker2_conv(nn.Conv2d(4, 8, 3))
    for ranks in [(5, 2), (0, 2), (2,), 3, (2.0, 3), (True, 2)]:
        with pytest.raises(ValueError, match=r"ranks must be integers \(C′, N′\) with 1 ≤ C′ ≤ 4 and 1 ≤ N′ ≤ 8"):
            tucker2_conv(nn.Conv2d(4, 8, 3), ranks=ranks)
    with pytest.raises(ValueError, match="nn.Conv2d"):
        tucker2_conv(nn.Linear(4, 4), variance=0.9)
