"""Measured inference latency: median milliseconds per call, timed by `torch.utils.benchmark`
(which synchronises CUDA and warms up), with the device it ran on."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import torch


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """torch's intra-op thread count (process-wide) set to `threads` for the block, then restored."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass(frozen=True)
class Latency:
    """Median and interquartile range of one call, in milliseconds, and where it ran."""

    median_ms: float
    iqr_ms: float
    device: str
    threads: int


@torch.no_grad()
def measure(fn: Callable[[torch.Tensor], object], x: torch.Tensor, *, min_run_time: float = 0.2) -> Latency:
    """Time ``fn(x)`` (blocks of calls until ``min_run_time`` seconds have passed) after one warm-up call."""
    from torch.utils import benchmark

    fn(x)
    timer = benchmark.Timer(stmt="fn(x)", globals={"fn": fn, "x": x}, num_threads=torch.get_num_threads())
    m = timer.blocked_autorange(min_run_time=min_run_time)
    return Latency(m.median * 1e3, m.iqr * 1e3, device_name(x.device), torch.get_num_threads())


def device_name(device: torch.device | str = "cpu") -> str:
    """A readable name of a device: the GPU's model, or "cpu"."""
    device = torch.device(device)
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
