"""Tucker-2 decomposition of convolutions with ranks chosen by a double binary search on retained
variance (DeepMon, thesis 004 ch. 3 §3.4.4, after Kim et al.'s Tucker-2 [50]).

A k×k convolution with weight W of shape [N, C, k, k] (N output, C input channels) is approximated as
W ≈ G ×₀ U_out ×₁ U_in with G of shape [N′, C′, k, k], U_in ∈ R^{C×C′}, U_out ∈ R^{N×N′} (orthonormal
columns), and replaced by three convolutions::

    1×1 C → C′ (weight U_inᵀ)  →  k×k C′ → N′ (weight G; the original stride, padding, dilation)
                               →  1×1 N′ → N (weight U_out; the original bias)

Dot products per output pixel drop from N·C·k² to C′·C + N′·C′·k² + N·N′ (the thesis's count; with a
stride s the first 1×1 runs at the input resolution, s² times more pixels, and `decompose` counts that).
The factors come from the HOSVD: U_in / U_out are the leading left singular vectors of the input-/
output-channel mode unfoldings of W, G = W ×₀ U_outᵀ ×₁ U_inᵀ. At full rank the replacement computes
the same function (up to float rounding); zero padding commutes with the bias-free 1×1 in front.

Choosing C′ and N′ (the thesis: "find N′ and C′ that maximise the variance when we reconstruct the
original tensor (similar to PCA) ... define the desired variance ... and use binary search to find the
parameters that best produce it"). The text gives no more than that. We read it as PCA on each mode:
the retained variance of rank r of a mode is the energy of its r leading singular values,
Σ_{i≤r} σ_i² / Σ_i σ_i², and one binary search per mode — hence "double" — finds the smallest rank
whose retained variance reaches the target v ∈ (0, 1]. Both searches use the same v. The energy is
monotone in r, so the binary search returns exactly the smallest such rank. Because the HOSVD error is
at most the sum of the two discarded mode energies, the reconstruction keeps at least 2v − 1 of the
weight's energy: relative error ≤ √(2(1 − v)); each `LayerReport` records the actual error.

`decompose` replaces every k×k (k > 1, ungrouped) convolution of a model whose replacement has fewer
MACs at the searched ranks (a 1-channel stem, for example, only once N′ < (N·k² − 1)/(k² + N)), and cross-checks each
factorisation against TensorLy's `partial_tucker` (HOOI initialised by the HOSVD, so its error is the
same or slightly lower). The result is plain `Sequential`s of `Conv2d` (describable by
qoeflow/models/arch.py). Fine-tuning afterwards (the thesis's last step) is `finetune.fit` on the whole
decomposed model: `fine_tune` below is that call; the caller chooses the epochs.

Where the thesis was loose we chose: its text names the channels the other way round ("N and C are the
numbers of input and output channels") while its factor shapes read C → C′ first; we use torch's layout
(W is [out, in, k, k]) and the shapes as drawn. Replacement is decided by MACs, the thesis's measure,
not by measured latency: three thin layers need not run faster than one on a given backend.
"""

from __future__ import annotations

import copy
import math
import numbers
from dataclasses import dataclass
from typing import Callable, Iterable

import torch
from torch import nn

from qoeflow.lifecycle.finetune import fit
from qoeflow.models.macs import count_macs


def check_variance(variance: object) -> float:
    """``variance`` as a float; ValueError unless it is a number in (0, 1]."""
    if isinstance(variance, bool) or not isinstance(variance, numbers.Real) or not math.isfinite(variance) \
            or not 0 < variance <= 1:
        raise ValueError(f"variance must be a number in (0, 1] (the share of each mode's energy to keep), "
                         f"got {variance!r}")
    return float(variance)


def _check_conv(conv: nn.Module) -> nn.Conv2d:
    if not isinstance(conv, nn.Conv2d):
        raise ValueError(f"conv must be an nn.Conv2d, got {type(conv).__name__}")
    if conv.groups != 1 or conv.kernel_size[0] * conv.kernel_size[1] <= 1:
        raise ValueError(f"conv must be a k×k convolution with k > 1 and groups=1, got kernel_size="
                         f"{tuple(conv.kernel_size)}, groups={conv.groups}")
    return conv


def unfold(weight: torch.Tensor, mode: int) -> torch.Tensor:
    """The mode-``mode`` unfolding of ``weight``: its ``mode`` axis as rows, every other axis as columns."""
    return weight.movedim(mode, 0).reshape(weight.shape[mode], -1)


def mode_spectrum(weight: torch.Tensor, mode: int) -> torch.Tensor:
    """Singular values (float64, descending) of the mode-``mode`` unfolding of ``weight``."""
    return torch.linalg.svdvals(unfold(weight.detach().double().cpu(), mode))


def retained_variance(singular_values: torch.Tensor, rank: int) -> float:
    """Share of the energy Σσ² kept by the ``rank`` leading singular values (1.0 from the full rank on)."""
    energy = torch.cumsum(singular_values.double() ** 2, 0)
    if rank >= len(energy) or energy[-1] == 0:
        return 1.0
    return float(energy[rank - 1] / energy[-1]) if rank >= 1 else 0.0


def smallest_rank(singular_values: torch.Tensor, variance: float, dim: int) -> int:
    """Binary search for the smallest rank r in [1, dim] with ``retained_variance(r) >= variance``."""
    variance = check_variance(variance)
    lo, hi = 1, dim  # the answer lies in [lo, hi]: retained_variance(dim) == 1
    while lo < hi:
        mid = (lo + hi) // 2
        if retained_variance(singular_values, mid) >= variance:
            hi = mid
        else:
            lo = mid + 1
    return lo


def choose_ranks(weight: torch.Tensor, variance: float) -> tuple[int, int]:
    """(C′, N′): the double binary search, one search per channel mode of ``weight`` [N, C, kh, kw]."""
    variance = check_variance(variance)
    c_rank = smallest_rank(mode_spectrum(weight, 1), variance, weight.shape[1])
    n_rank = smallest_rank(mode_spectrum(weight, 0), variance, weight.shape[0])
    return c_rank, n_rank


@dataclass(frozen=True)
class Tucker2:
    """W ≈ core ×₀ u_out ×₁ u_in (float64): core [N′, C′, kh, kw], u_in [C, C′], u_out [N, N′]."""

    core: torch.Tensor
    u_in: torch.Tensor
    u_out: torch.Tensor

    @property
    def ranks(self) -> tuple[int, int]:
        """(C′, N′)."""
        return self.u_in.shape[1], self.u_out.shape[1]

    def reconstruct(self) -> torch.Tensor:
        """The approximated weight [N, C, kh, kw]."""
        return torch.einsum("abij,na,cb->ncij", self.core, self.u_out, self.u_in)


def _leading_vectors(weight: torch.Tensor, mode: int, rank: int) -> torch.Tensor:
    u, _, _ = torch.linalg.svd(unfold(weight, mode), full_matrices=True)  # full: ranks up to the mode's size
    return u[:, :rank]


def hosvd(weight: torch.Tensor, ranks: tuple[int, int]) -> Tucker2:
    """Truncated HOSVD of ``weight`` [N, C, kh, kw] over its two channel modes at ``ranks`` = (C′, N′)."""
    n, c = weight.shape[:2]
    if not (isinstance(ranks, (tuple, list)) and len(ranks) == 2
            and all(isinstance(r, numbers.Integral) and not isinstance(r, bool) for r in ranks)
            and 1 <= ranks[0] <= c and 1 <= ranks[1] <= n):
        raise ValueError(f"ranks must be integers (C′, N′) with 1 ≤ C′ ≤ {c} and 1 ≤ N′ ≤ {n}, got {ranks!r}")
    w = weight.detach().double().cpu()
    u_in, u_out = _leading_vectors(w, 1, int(ranks[0])), _leading_vectors(w, 0, int(ranks[1]))
    return Tucker2(torch.einsum("ncij,na,cb->abij", w, u_out, u_in), u_in, u_out)


def relative_error(weight: torch.Tensor, approx: torch.Tensor) -> float:
    """‖W − Ŵ‖_F / ‖W‖_F (0 for a zero weight reproduced exactly)."""
    w = weight.detach().double().cpu()
    diff = float(torch.linalg.vector_norm(w - approx.detach().double().cpu()))
    norm = float(torch.linalg.vector_norm(w))
    return diff / norm if norm > 0 else (0.0 if diff == 0 else math.inf)


def tensorly_error(weight: torch.Tensor, ranks: tuple[int, int]) -> float:
    """Relative error of TensorLy's `partial_tucker` (HOOI, SVD init) of ``weight`` at ``ranks`` = (C′, N′)."""
    import tensorly as tl
    from tensorly.decomposition import partial_tucker

    w = weight.detach().double().cpu().numpy()
    (core, factors), _ = partial_tucker(w, rank=[ranks[1], ranks[0]], modes=[0, 1], init="svd")
    approx = tl.tenalg.multi_mode_dot(core, factors, modes=[0, 1])
    return relative_error(weight, torch.as_tensor(approx))


def factorised_conv(conv: nn.Conv2d, factors: Tucker2) -> nn.Sequential:
    """Sequential(1×1 C→C′, kh×kw C′→N′ with ``conv``'s stride/padding/dilation, 1×1 N′→N with its bias)."""
    c_rank, n_rank = factors.ranks
    like = {"device": conv.weight.device, "dtype": conv.weight.dtype}
    first = nn.Conv2d(conv.in_channels, c_rank, 1, bias=False, **like)
    core = nn.Conv2d(c_rank, n_rank, conv.kernel_size, conv.stride, conv.padding, conv.dilation, bias=False,
                     padding_mode=conv.padding_mode, **like)
    last = nn.Conv2d(n_rank, conv.out_channels, 1, bias=conv.bias is not None, **like)
    with torch.no_grad():
        first.weight.copy_(factors.u_in.T[:, :, None, None])
        core.weight.copy_(factors.core)
        last.weight.copy_(factors.u_out[:, :, None, None])
        if conv.bias is not None:
            last.bias.copy_(conv.bias)
    return nn.Sequential(first, core, last).train(conv.training)


def tucker2_conv(conv: nn.Conv2d, variance: float | None = None,
                 ranks: tuple[int, int] | None = None) -> tuple[nn.Sequential, Tucker2]:
    """Tucker-2 of one k×k ``conv`` at ranks from ``variance`` (double binary search) or at given
    ``ranks`` = (C′, N′) (exactly one of the two); returns the replacement and its factors."""
    _check_conv(conv)
    if (variance is None) == (ranks is None):
        raise ValueError(f"give exactly one of variance or ranks, got variance={variance!r}, ranks={ranks!r}")
    if ranks is None:
        ranks = choose_ranks(conv.weight, variance)
    factors = hosvd(conv.weight, ranks)
    return factorised_conv(conv, factors), factors


@dataclass(frozen=True)
class LayerReport:
    """One k×k convolution of a model: the candidate Tucker-2 at the searched ranks, and whether it was used.

    ``macs_after`` is the layer's MACs in the returned model (= ``macs_before`` when kept as it was);
    ``candidate_macs`` the replacement's MACs either way. Errors are ‖W − Ŵ‖/‖W‖ of the candidate."""

    name: str
    in_channels: int
    out_channels: int
    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    ranks: tuple[int, int]  # (C′, N′)
    retained: tuple[float, float]  # retained variance of the input-, output-channel mode at those ranks
    macs_before: int
    candidate_macs: int
    macs_after: int
    error: float  # our HOSVD
    error_tensorly: float  # TensorLy partial_tucker (HOOI) at the same ranks; nan when not cross-checked
    decomposed: bool


def _input_shapes(model: nn.Module, input_shape: tuple[int, ...], names: list[str]) -> dict[str, tuple]:
    """The input shape (without batch) each named module sees in one forward pass of a zero input."""
    shapes: dict[str, tuple] = {}
    modules = dict(model.named_modules())

    def record(name: str):
        def hook(module, args, output) -> None:
            shapes.setdefault(name, tuple(args[0].shape[1:]))
        return hook

    hooks = [modules[n].register_forward_hook(record(n)) for n in names]
    param = next(model.parameters(), None)
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros((1, *input_shape), device=param.device if param is not None else "cpu",
                              dtype=param.dtype if param is not None else torch.float32))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return shapes


def decomposable(model: nn.Module) -> list[str]:
    """Names of the k×k (k > 1), ungrouped convolutions of ``model``."""
    return [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.groups == 1
            and m.kernel_size[0] * m.kernel_size[1] > 1]


def decompose(model: nn.Module, variance: float, *, input_shape: tuple[int, ...], skip: Iterable[str] = (),
              cross_check: bool = True) -> tuple[nn.Module, list[LayerReport]]:
    """A copy of ``model`` in which every k×k convolution (except those named in ``skip``) is replaced by
    its Tucker-2 at the ranks of the double binary search for ``variance`` wherever that lowers its MACs
    on inputs of ``input_shape`` (no batch dim); with the report of every such convolution.
    ``cross_check`` also factorises each with TensorLy (slower). ``model`` itself is left untouched."""
    variance = check_variance(variance)
    skip = set(skip)
    names = [n for n in decomposable(model) if n not in skip]
    if not names:
        raise ValueError(f"model has no k×k convolution (k > 1, groups=1) to decompose"
                         f"{' outside skip=' + repr(sorted(skip)) if skip else ''}")
    new = copy.deepcopy(model)
    shapes = _input_shapes(new, tuple(input_shape), names)
    modules = dict(new.named_modules())
    reports = []
    for name in names:
        if name not in shapes:  # never reached by the forward pass: nothing to gain
            continue
        conv = modules[name]
        replacement, factors = tucker2_conv(conv, variance=variance)
        before, candidate = count_macs(conv, shapes[name]), count_macs(replacement, shapes[name])
        use = candidate < before
        if use:
            parent_name, _, attr = name.rpartition(".")
            setattr(modules[parent_name] if parent_name else new, attr, replacement)
        c_rank, n_rank = factors.ranks
        reports.append(LayerReport(
            name=name, in_channels=conv.in_channels, out_channels=conv.out_channels,
            kernel_size=tuple(conv.kernel_size), stride=tuple(conv.stride), ranks=factors.ranks,
            retained=(retained_variance(mode_spectrum(conv.weight, 1), c_rank),
                      retained_variance(mode_spectrum(conv.weight, 0), n_rank)),
            macs_before=before, candidate_macs=candidate, macs_after=candidate if use else before,
            error=relative_error(conv.weight, factors.reconstruct()),
            error_tensorly=tensorly_error(conv.weight, factors.ranks) if cross_check else math.nan,
            decomposed=use))
    return new, reports


def fine_tune(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int, lr: float = 1e-3,
              batch_size: int = 64, seed: int = 0,
              on_epoch: Callable[[int, float], None] | None = None) -> list[float]:
    """Recover accuracy after `decompose`: `finetune.fit` of the whole decomposed model (factors, cores,
    batch norms, classifier) with Adam; returns the mean training loss of each epoch."""
    return fit(model, x, y, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, on_epoch=on_epoch)
