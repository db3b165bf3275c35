"""Timing's allocator (qoeflow/models/latency.py): after `steady_allocator`, a forward pass reuses the memory
of the previous one's feature maps instead of faulting fresh pages in, which it does under glibc's defaults
in a fresh process."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PROBE = r"""
import json, resource
import torch
from torch import nn
from qoeflow.models.latency import steady_allocator

torch.set_num_threads(1)
torch.manual_seed(0)
net = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
                    nn.MaxPool2d(2), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1)).eval()
x = torch.randn(16, 1, 32, 32)  # feature maps of 1 MiB, as the DMS model's at batch 16

def faults_per_call():
    with torch.no_grad():
        for _ in range(3):
            net(x)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(10):
            net(x)
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10

out = {"default": faults_per_call(), "applied": steady_allocator(), "again": steady_allocator()}
out["steady"] = faults_per_call()
print(json.dumps(out))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator: Linux only")
def test_steady_allocator_stops_every_forward_pass_faulting_its_feature_maps_in_again():
    run = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, check=True)
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["default"] >= 256  # glibc's defaults: a megabyte or more of fresh pages per call
    assert out["applied"] is True and out["again"] is True
    assert out["steady"] < 16
