"""The inference harness (qoeflow/models/harness.py) on a tiny model: devices resolved with clear errors,
precisions parsed, every layout computing the same function, percentiles and throughput consistent, a
precision the model cannot run recorded as an error while the others go on."""

from __future__ import annotations

import time

import pandas as pd

import pytest
import torch
from torch import nn

from qoeflow.models import harness
from qoeflow.models.arch import composite, save_model
from qoeflow.models.benchmark import bench_catalog

torch.set_num_threads(1)


def tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(16, 10)).eval()


def labelled(model: nn.Module, n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs labelled by the model itself in fp32 (its fp32 accuracy is 1)."""
    x = torch.randn(n, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return x, model(x).argmax(1)


@composite
class Fp32Only(nn.Module):
    """Refuses any input that is not float32, as a layer without a reduced-precision kernel would."""

    def __init__(self):
        super().__init__()
        self.body = tiny()

    def forward(self, x):
        if x.dtype != torch.float32:
            raise TypeError(f"no {x.dtype} kernel")
        return self.body(x)


def test_devices_resolve_with_clear_errors():
    assert harness.resolve_device("cpu").type == "cpu"
    assert harness.resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        harness.resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            harness.resolve_device("cuda")


@pytest.mark.parametrize("name", ["fp64", "fp32+cl+cl", "fp16+fast", ""])
def test_unknown_precisions_are_refused(name):
    with pytest.raises(ValueError, match="unknown precision"):
        harness.precision(name)


def test_precision_names_say_what_runs():
    p = harness.precision("autocast-bf16+cl+compile")
    assert (p.dtype, p.autocast, p.channels_last, p.compiled) == (None, torch.bfloat16, True, True)
    assert harness.precision("fp16").dtype == torch.float16
    assert harness.default_precisions(torch.device("cpu")) == ("fp32", "fp32+cl", "autocast-bf16+cl")
    assert len(harness.default_precisions(torch.device("cuda"))) == 12


@pytest.mark.parametrize("name", ["fp32+cl", "fp32+fold", "autocast-bf16+cl", "bf16", "bf16+cl+fold"])
def test_every_precision_computes_the_same_function(name):
    model = tiny()
    x, y = labelled(model)
    runner = harness.Runner(model, harness.precision(name), torch.device("cpu"))
    ready = runner.inputs(x)
    if runner.precision.channels_last:
        assert ready.is_contiguous(memory_format=torch.channels_last)
    out = runner(ready)
    assert out.dtype == torch.float32
    folded = not any(isinstance(m, nn.BatchNorm2d) for m in runner.model.modules())
    assert folded == runner.precision.folded
    exact = name in ("fp32+cl", "fp32+fold")
    assert torch.allclose(out, model(x), atol=1e-5 if exact else 0.1)
    assert harness.accuracy(runner, x, y) >= (1.0 if exact else 0.85)
    assert next(model.parameters()).dtype == torch.float32  # the caller's model is left as it was


def test_measured_rows_are_consistent():
    model = tiny()
    x, y = labelled(model)
    rows = harness.measure_model(model, ["fp32", "fp32+cl"], torch.device("cpu"), [1, 8], x, y, min_run_time=0.05)
    assert [(r["precision"], r["batch"]) for r in rows] == [("fp32", 1), ("fp32", 8), ("fp32+cl", 1), ("fp32+cl", 8)]
    for r in rows:
        assert r["error"] is None and r["accuracy"] == 1.0
        assert 0 < r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"] and r["calls"] >= 10
        assert r["throughput"] == pytest.approx(r["batch"] * 1e3 / r["p50_ms"])
        assert r["peak_memory_bytes"] > 0
        assert (r["device"], r["threads"], r["torch"], r["cuda"]) == ("cpu", 1, torch.__version__, None)


def test_a_precision_the_model_cannot_run_is_an_error_row_and_the_others_go_on():
    model = Fp32Only()
    x, y = labelled(model.body)
    rows = harness.measure_model(model, ["bf16", "fp32"], torch.device("cpu"), [2], x, y, min_run_time=0.0)
    assert rows[0]["precision"] == "bf16" and "no torch.bfloat16 kernel" in rows[0]["error"] and "p50_ms" not in rows[0]
    assert rows[1]["precision"] == "fp32" and rows[1]["error"] is None and rows[1]["accuracy"] == 1.0


class Branchy(nn.Module):
    """A forward whose path depends on the data: torch.fx cannot trace it, so it cannot be folded."""

    def __init__(self):
        super().__init__()
        self.body = tiny()

    def forward(self, x):
        return self.body(x) if x.sum() > -1e9 else -self.body(x)


def test_a_model_that_cannot_be_folded_is_an_error_row_and_the_others_go_on():
    model = Branchy().eval()
    x, y = labelled(model)
    rows = harness.measure_model(model, ["fp32+fold", "fp32"], torch.device("cpu"), [2], x, y, min_run_time=0.0)
    assert rows[0]["precision"] == "fp32+fold" and "TraceError" in rows[0]["error"] and "p50_ms" not in rows[0]
    assert rows[1]["error"] is None and rows[1]["accuracy"] == 1.0


def test_timing_waits_for_each_call_and_honours_its_bounds():
    t = harness.time_calls(lambda x: time.sleep(0.002), torch.zeros(4), min_run_time=0.0, min_calls=12)
    assert t.calls == 12 and t.batch == 4 and t.p50_ms >= 2.0
    with pytest.raises(ValueError, match="min_calls"):
        harness.time_calls(lambda x: x, torch.zeros(1), min_calls=0)
    with pytest.raises(ValueError, match="batch sizes"):
        harness.measure_model(tiny(), ["fp32"], torch.device("cpu"), [0], *labelled(tiny()))


def test_the_pareto_front_keeps_what_nothing_beats():
    latency, accuracy = [1.0, 2.0, 3.0, 2.0, 1.0], [0.5, 0.9, 0.95, 0.8, 0.5]
    assert harness.pareto_front(latency, accuracy) == [True, True, True, False, True]  # equal points both stay


def test_a_catalog_measured_with_a_precision_one_variant_cannot_run(tmp_path):
    """bench_catalog: the failing variant × precision is reported and left out; everything else is measured."""
    plain, picky = tiny(), Fp32Only()
    save_model(plain, tmp_path / "plain.pt")
    save_model(picky, tmp_path / "picky.pt")
    catalog = pd.DataFrame([{"variant": v, "family": "digits", "method": "base", "macs": 1000, "path": f"{v}.pt"}
                            for v in ("plain", "picky")])
    x, y = labelled(plain)
    table, failures = bench_catalog(catalog, tmp_path, lambda family: (x, y), device=torch.device("cpu"),
                                    precisions=["fp32", "bf16"], batches=[2], min_run_time=0.0)
    assert set(zip(table["variant"], table["precision"])) == {("plain", "fp32"), ("plain", "bf16"), ("picky", "fp32")}
    assert len(failures) == 1 and failures[0].startswith("picky at bf16: TypeError: no torch.bfloat16 kernel")
    assert table["pareto"].any()
