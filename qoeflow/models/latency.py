"""Measured inference latency: median milliseconds per call, timed by `torch.utils.benchmark`
(which synchronises CUDA and warms up), with the device it ran on.

CPU timings depend on the C allocator as much as on the model. glibc serves a block above its mmap
threshold (128 KiB at first, raised adaptively as such blocks are freed) from fresh pages and returns heap
memory above its trim threshold to the system, so a process that has only run small batches pays page
faults for every feature map of every call. Measured here on one thread: digits ResNet at batch 64 took
21.9 ms in a fresh process and 10.8 ms with `steady_allocator`; the digits VGG DMS model at batch 16 5.4
ms and 3.3 ms, and the same 3.4 ms without it after five seconds of batch-256 calls had raised the
thresholds. So a latency depended on what the process had run before. Every latency measurement
(`measure`, the bench harness, the QoS, caching and video runs, training's test latency) calls
`steady_allocator` first, which fixes both thresholds high: a benchmark, not a memory-tight server, is
what runs it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
MMAP_THRESHOLD = 32 << 20  # glibc's largest allowed: blocks below it come from the heap, reused
TRIM_THRESHOLD = 256 << 20  # free heap memory kept before any is returned to the system


@functools.cache
def steady_allocator() -> bool:
    """Make glibc keep and reuse freed memory (fixed mmap and trim thresholds, see the module notes), once
    per process; False where the C library is not glibc (nothing changed)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    libc = ctypes.CDLL(name)
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(libc.mallopt(M_TRIM_THRESHOLD,
                                                                                     TRIM_THRESHOLD))


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

    steady_allocator()
    fn(x)
    timer = benchmark.Timer(stmt="fn(x)", globals={"fn": fn, "x": x}, num_threads=torch.get_num_threads())
    m = timer.blocked_autorange(min_run_time=min_run_time)
    return Latency(m.median * 1e3, m.iqr * 1e3, device_name(x.device), torch.get_num_threads())


def device_name(device: torch.device | str = "cpu") -> str:
    """A readable name of a device: the GPU's model, or "cpu"."""
    device = torch.device(device)
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
