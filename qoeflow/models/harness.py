"""Inference measurement of one model at one precision and memory layout on one device: warm-up, then
timed calls with the device synchronised after each; latency percentiles, throughput, peak memory,
accuracy, and the device as it was. The same code runs on the CPU and on CUDA; nothing assumes either.
Precision names: qoeflow/precisions.py.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from qoeflow import precisions
from qoeflow.models.latency import device_name, steady_allocator

DEVICES = ("auto", "cpu", "cuda")
TYPES: dict[str, dict[str, torch.dtype]] = {
    "fp32": {}, "fp16": {"dtype": torch.float16}, "bf16": {"dtype": torch.bfloat16},
    "autocast-fp16": {"autocast": torch.float16}, "autocast-bf16": {"autocast": torch.bfloat16},
}


@dataclass(frozen=True)
class Precision:
    """How a model runs: weights cast to `dtype` (None: fp32 kept), operations under autocast to `autocast`,
    `channels_last` memory layout, batch norms `folded` into the layers before them, compiled by
    `torch.compile`."""

    name: str
    dtype: torch.dtype | None = None
    autocast: torch.dtype | None = None
    channels_last: bool = False
    folded: bool = False
    compiled: bool = False


def precision(name: str) -> Precision:
    """The precision named `BASE[+cl][+fold][+compile]` (qoeflow/precisions.py)."""
    base, flags = precisions.parse(name)
    return Precision(str(name), channels_last="cl" in flags, folded="fold" in flags, compiled="compile" in flags,
                     **TYPES[base])


def default_precisions(device: torch.device) -> tuple[str, ...]:
    """What is worth measuring on `device`: on CUDA fp32, fp16 and autocast fp16/bf16, each plain, in
    channels_last and compiled; on the CPU fp32, fp32 in channels_last and bf16 autocast in channels_last
    (CPUs with AVX-512 BF16 run it natively; fp16 has no fast path there)."""
    if torch.device(device).type == "cuda":
        return tuple(f"{b}{s}" for b in ("fp32", "fp16", "autocast-fp16", "autocast-bf16")
                     for s in ("", "+cl", "+compile"))
    return ("fp32", "fp32+cl", "autocast-bf16+cl")


def resolve_device(spec: str) -> torch.device:
    """`auto` (CUDA when present, else the CPU), `cpu` or `cuda`; a clear error for anything else, and for
    `cuda` where torch sees no CUDA device."""
    if spec not in DEVICES:
        raise ValueError(f"unknown device {spec!r} (choose one of {', '.join(DEVICES)})")
    if spec == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for, but torch sees no CUDA device on this machine "
                         f"(torch {torch.__version__}); use --device cpu or --device auto")
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(spec)


def device_info(device: torch.device) -> dict:
    """The device a measurement ran on: its name, torch's version, CPU threads, CUDA and cuDNN versions."""
    device = torch.device(device)
    cuda = device.type == "cuda"
    return {"device": device_name(device), "device_type": device.type, "torch": torch.__version__,
            "threads": torch.get_num_threads(), "cuda": torch.version.cuda if cuda else None,
            "cudnn": torch.backends.cudnn.version() if cuda else None}


class Runner:
    """A copy of a model prepared for one precision on one device. `inputs(x)` converts a batch (device,
    dtype, layout) once; calling the runner on converted inputs returns float32 outputs."""

    def __init__(self, model: nn.Module, p: Precision, device: torch.device):
        self.precision, self.device = p, torch.device(device)
        net = copy.deepcopy(model).eval().to(self.device)
        if p.folded:  # torch.fx traces the model: one it cannot trace fails here, recorded as this precision's error
            from torch.fx.experimental.optimization import fuse

            net = fuse(net)
        if p.dtype is not None:
            net = net.to(p.dtype)
        if p.channels_last:
            net = net.to(memory_format=torch.channels_last)
        self.model = net
        self._run = torch.compile(net) if p.compiled else net

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, dtype=self.precision.dtype or x.dtype)
        return x.contiguous(memory_format=torch.channels_last) if self.precision.channels_last and x.dim() == 4 else x

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        p = self.precision
        with torch.autocast(self.device.type, dtype=p.autocast or torch.bfloat16, enabled=p.autocast is not None):
            out = self._run(x)
        return out.float()


def synchronizer(device: torch.device) -> Callable[[], None]:
    """Waits for the device's queued work (CUDA); nothing to wait for on the CPU."""
    device = torch.device(device)
    return (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)


@dataclass(frozen=True)
class Timing:
    """Latency percentiles of one call in milliseconds over `calls` timed calls of a batch of `batch`."""

    batch: int
    calls: int
    p50_ms: float
    p90_ms: float
    p99_ms: float

    @property
    def throughput(self) -> float:
        """Samples per second at the median latency."""
        return self.batch * 1e3 / self.p50_ms


def time_calls(fn: Callable[[torch.Tensor], object], x: torch.Tensor, *, min_run_time: float = 0.5,
               warmup: int = 3, min_calls: int = 10, max_calls: int = 100_000) -> Timing:
    """Time `fn(x)` call by call (the device synchronised after each) for at least `min_run_time` seconds
    and `min_calls` calls, after `warmup` untimed calls."""
    if warmup < 0 or min_calls < 1 or max_calls < min_calls or not min_run_time >= 0:
        raise ValueError(f"need warmup ≥ 0, 1 ≤ min_calls ≤ max_calls and min_run_time ≥ 0, got {warmup}, "
                         f"{min_calls}, {max_calls}, {min_run_time}")
    sync = synchronizer(x.device)
    steady_allocator()
    with torch.no_grad():
        for _ in range(warmup):
            fn(x)
        sync()
        times: list[float] = []
        start = time.perf_counter()
        while len(times) < max_calls and (len(times) < min_calls or time.perf_counter() - start < min_run_time):
            t0 = time.perf_counter()
            fn(x)
            sync()
            times.append(time.perf_counter() - t0)
    p50, p90, p99 = np.percentile(np.array(times) * 1e3, [50, 90, 99])
    return Timing(int(x.shape[0]), len(times), float(p50), float(p90), float(p99))


def peak_memory(fn: Callable[[torch.Tensor], object], x: torch.Tensor) -> int:
    """Bytes: the CUDA allocator's peak during one `fn(x)` on CUDA; the process's resident memory after
    it on the CPU."""
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)
        torch.cuda.reset_peak_memory_stats(x.device)
        with torch.no_grad():
            fn(x)
        torch.cuda.synchronize(x.device)
        return int(torch.cuda.max_memory_allocated(x.device))
    import psutil

    with torch.no_grad():
        fn(x)
    return int(psutil.Process().memory_info().rss)


def accuracy(runner: Runner, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256) -> float:
    """Top-1 accuracy of `runner` on (x, y), in batches."""
    right = 0
    for i in range(0, len(x), batch_size):
        out = runner(runner.inputs(x[i:i + batch_size]))
        right += int((out.argmax(1).cpu() == y[i:i + batch_size]).sum())
    return right / max(len(x), 1)


def measure_model(model: nn.Module, precisions: list[str], device: torch.device, batches: list[int],
                  x_test: torch.Tensor, y_test: torch.Tensor, *, min_run_time: float = 0.5,
                  on_result: Callable[[dict], None] | None = None) -> list[dict]:
    """One row per precision × batch size: latency percentiles, throughput, peak memory, accuracy on the
    test split, and the device. A precision the device cannot run (or torch cannot compile) gives a row
    with its error and no figures, and the others go on."""
    if not batches or any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in batches):
        raise ValueError(f"batch sizes must be positive integers, got {batches}")
    info, rows = device_info(device), []
    for name in precisions:
        p = precision(name)
        try:
            runner = Runner(model, p, device)
            score = accuracy(runner, x_test, y_test)
        except Exception as exc:  # a dtype or compiler the device lacks: recorded, not fatal
            rows.append({"precision": name, "error": f"{type(exc).__name__}: {exc}".splitlines()[0], **info})
            continue
        for b in batches:
            x = runner.inputs(x_test[:b] if len(x_test) >= b else x_test[torch.arange(b) % len(x_test)])
            t = time_calls(runner, x, min_run_time=min_run_time)
            rows.append({"precision": name, "batch": b, "p50_ms": t.p50_ms, "p90_ms": t.p90_ms, "p99_ms": t.p99_ms,
                         "throughput": t.throughput, "calls": t.calls, "peak_memory_bytes": peak_memory(runner, x),
                         "accuracy": score, "error": None, **info})
            if on_result:
                on_result(rows[-1])
    return rows


def pareto_front(latency: Sequence[float], accuracy: Sequence[float]) -> list[bool]:
    """Which points no other point beats: none is at least as fast and as accurate, and better in one."""
    points = list(zip(latency, accuracy))
    return [not any(lo <= l and ao >= a and (lo < l or ao > a) for lo, ao in points) for l, a in points]


__all__ = ["pareto_front", "DEVICES", "Precision", "precision", "default_precisions", "resolve_device", "device_info", "Runner",
           "synchronizer", "Timing", "time_calls", "peak_memory", "accuracy", "measure_model"]
