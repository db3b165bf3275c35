"""DMS QoS control (qoeflow/lifecycle/qos.py, qoeflow/models/qos_run.py): the PI controller on a simulated plant
(step response, disturbance, unreachable target and anti-windup, bad input), and one small run of concurrent
tasks on a real DMSNet. No timing-sensitive quality figures here: those belong to benchmarks."""

from __future__ import annotations

import math
import threading
from typing import Callable

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from qoeflow.lifecycle import dms
from qoeflow.lifecycle.qos import Gains, PIController, Step
from qoeflow.models import digits
from qoeflow.models import qos_run as q

LINEAR = [10.0 - 0.5 * k for k in range(11)]  # ms at levels 0..10: latency linear in the level


def lowest_meeting(table: list[float], target: float, factor: float = 1.0) -> int:
    """The lowest level whose latency (× factor) meets the target."""
    return min(k for k, ms in enumerate(table) if ms * factor <= target)


def simulate(ctl: PIController, periods: int, factor: Callable[[int], float] = lambda p: 1.0,
             table: list[float] = LINEAR) -> tuple[list[int], list[Step], list[float]]:
    """Run the loop on a deterministic plant: per period the level run, the controller's step, its position."""
    levels, steps, positions = [], [], []
    for period in range(periods):
        levels.append(ctl.level)
        steps.append(ctl.step(table[ctl.level] * factor(period)))
        positions.append(ctl.position)
    return levels, steps, positions


def settled(levels: list[int], level: int) -> int:
    """The first period from which the level stays at `level` to the end."""
    i = len(levels)
    while i > 0 and levels[i - 1] == level:
        i -= 1
    return i


# ---- the controller on a simulated plant --------------------------------------------------------------------


@pytest.mark.parametrize("target", [9.9, 8.1, 7.2, 5.4])
def test_step_response_settles_at_the_lowest_level_meeting_the_target(target):
    ctl = PIController.from_table(target, LINEAR)
    levels, steps, _ = simulate(ctl, 40)
    best = lowest_meeting(LINEAR, target)
    assert settled(levels, best) <= 10  # settles within 10 periods and stays: no sustained oscillation
    assert levels[:settled(levels, best)] == sorted(levels[:settled(levels, best)])  # rises without overshoot
    assert max(levels) == best
    assert not any(s.saturated or s.unreachable or s.warning for s in steps[settled(levels, best):])


def test_default_gains_settle_on_a_plant_of_five_percent_per_level():
    table = [10.0 - 0.4 * k for k in range(11)]  # 0.4 ms per level = 5% of the 8 ms target
    levels, _, _ = simulate(PIController(8.0, 10), 40, table=table)
    assert settled(levels, lowest_meeting(table, 8.0)) <= 10


def test_disturbance_moves_to_a_higher_level_and_back():
    target = 7.2
    ctl = PIController.from_table(target, LINEAR)
    slow = range(20, 40)
    levels, _, _ = simulate(ctl, 60, lambda p: 1.3 if p in slow else 1.0)
    normal, disturbed = lowest_meeting(LINEAR, target), lowest_meeting(LINEAR, target, 1.3)
    assert disturbed > normal
    assert set(levels[12:20]) == {normal}
    assert set(levels[28:40]) == {disturbed}  # within 8 periods of the disturbance
    assert set(levels[48:60]) == {normal}  # and back within 8 periods after it


def test_unreachable_target_saturates_is_flagged_stays_stable_and_recovers():
    target = 7.2
    ctl = PIController.from_table(target, LINEAR)
    heavy = range(20, 40)  # ×3: 15 ms even at the highest level
    levels, steps, positions = simulate(ctl, 60, lambda p: 3.0 if p in heavy else 1.0)
    top = ctl.max_level
    assert set(levels[22:40]) == {top}  # stays at the maximum: no oscillation
    assert all(s.saturated for s in steps[22:40])
    assert all(s.unreachable and "unreachable" in s.warning for s in steps[25:40])
    assert not any(s.unreachable or s.warning for s in steps[:20])
    assert max(positions) == top  # the integral does not wind up past the limit
    assert settled(levels, lowest_meeting(LINEAR, target)) <= 44  # recovers within 4 periods
    assert not any(s.unreachable for s in steps[40:])


def test_target_looser_than_the_full_model_saturates_at_level_0_without_warning():
    levels, steps, positions = simulate(PIController.from_table(20.0, LINEAR), 10)
    assert set(levels) == {0} and set(positions) == {0.0}
    assert all(s.saturated and not s.unreachable and s.warning is None for s in steps)


def test_gains_from_a_table_scale_with_the_slope_per_level():
    gains = Gains.from_table(LINEAR, 5.0)  # 0.5 ms per level = 10% of the target
    assert gains.band == pytest.approx(0.1)
    assert gains == Gains.for_step(0.1)
    assert Gains.from_table([2 * v for v in LINEAR], 5.0).ki == pytest.approx(gains.ki / 2)


@pytest.mark.parametrize("kwargs, match", [
    ({"target_ms": 0.0}, "target_ms"), ({"target_ms": -1.0}, "target_ms"), ({"target_ms": math.nan}, "target_ms"),
    ({"target_ms": math.inf}, "target_ms"), ({"max_level": -1}, "max_level"), ({"max_level": 2.5}, "max_level"),
    ({"gains": Gains(-1.0, 1.0, 0.05)}, "kp"), ({"gains": Gains(1.0, math.nan, 0.05)}, "ki"),
    ({"gains": Gains(1.0, math.inf, 0.05)}, "ki"), ({"gains": Gains(1.0, 1.0, -0.1)}, "band"),
    ({"rise": 1.0}, "rise"), ({"fall": -0.1}, "fall"), ({"patience": 0}, "patience"), ({"level": 11}, "level"),
])
def test_bad_controller_settings_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PIController(**{"target_ms": 5.0, "max_level": 10, **kwargs})


@pytest.mark.parametrize("latency", [math.nan, math.inf, -1.0, "3", True])
def test_bad_measured_latency_raises(latency):
    ctl = PIController(5.0, 10)
    with pytest.raises(ValueError, match="measured latency"):
        ctl.step(latency)
    assert ctl.level == 0 and ctl.position == 0.0  # nothing moved
    assert ctl.step(np.float32(6.0)).error == pytest.approx(0.2)  # numpy scalars are numbers


@pytest.mark.parametrize("call, match", [
    (lambda: Gains.for_step(0.0), "step"), (lambda: Gains.for_step(0.05, speed=1.5), "speed"),
    (lambda: Gains.from_table([1.0, 2.0, 3.0], 2.0), "fall with the level"),
    (lambda: Gains.from_table([1.0], 2.0), "latencies_ms"),
    (lambda: Gains.from_table([2.0, math.nan], 2.0), "latencies_ms"),
    (lambda: Gains.from_table(LINEAR, 0.0), "target_ms"),
])
def test_bad_gain_inputs_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ---- one small run on a real DMSNet -----------------------------------------------------------------------


def randomised_vgg() -> nn.Module:
    """The zoo's VGG in eval mode with random batch-norm statistics (as tests/test_dms.py builds it)."""
    torch.manual_seed(0)
    model = digits.BUILDERS["vgg"]()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.fixture(scope="module")
def small() -> tuple[dms.DMSNet, torch.Tensor, list[float], list[float]]:
    """A DMSNet, one input, its accuracy per level (on pseudo-labels) and a latency profile."""
    model = randomised_vgg()
    x = torch.randn(32, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x).argmax(dim=1)
    net, _ = dms.make_dms(model, x, y)
    accuracy = q.level_accuracy(net, x, y)
    return net, x[:1], accuracy, q.profile_levels(net, x[:1], inferences=10)


def test_level_accuracy_and_profile_cover_every_level(small):
    net, _, accuracy, profile = small
    assert len(accuracy) == len(profile) == net.levels + 1 >= 2
    assert accuracy[0] == 1.0 and all(0 <= a <= 1 for a in accuracy)
    assert all(math.isfinite(ms) and ms > 0 for ms in profile)


def test_disturbance_is_the_middle_third():
    assert q.disturbed_periods(150) == range(50, 100)
    assert q.disturbed_periods(6) == range(2, 4)


def test_shares_in_reach_leave_out_the_periods_the_fastest_level_missed():
    # five periods of one task, target 10 ms, highest level 3: two periods at level 3 and too slow
    rows = [(1, 10.5, False), (3, 10.4, True), (3, 13.0, True), (3, 9.5, False), (2, 12.0, False)]
    records = pd.DataFrame([{"controlled": True, "task": "A", "period": p, "level": level, "latency_ms": ms,
                             "target_ms": 10.0, "disturbed": False, "saturated": out, "unreachable": False,
                             "out_of_reach": out, "accuracy": 0.9} for p, (level, ms, out) in enumerate(rows)])
    undisturbed = q.summarise(records).set_index("phase").loc["undisturbed"]
    assert undisturbed.within_10 == pytest.approx(3 / 5)  # 10.5, 10.4, 9.5
    assert undisturbed.in_reach == pytest.approx(3 / 5)
    assert undisturbed.within_10_in_reach == pytest.approx(2 / 3)  # 10.5 and 9.5 of 10.5, 9.5, 12.0
    gone = q.summarise(records.assign(out_of_reach=True)).set_index("phase").loc["all"]
    assert gone.in_reach == 0 and math.isnan(gone.within_10_in_reach)


def test_small_run_controlled_and_not(small, tmp_path):
    net, x, accuracy, profile = small
    tasks = [q.Task("fast", 0.85 * profile[0]), q.Task("slow", 1.5 * profile[0])]
    threads = torch.get_num_threads()
    runs = [q.run_qos(net, tasks, x, table, periods=6, inferences=3, controlled=controlled, profile=profile)
            for controlled, table in ((True, accuracy), (False, dict(enumerate(accuracy))))]  # list or mapping
    assert torch.get_num_threads() == threads  # restored
    assert not any(t.name.startswith("qos-disturbance") for t in threading.enumerate())  # stopped
    for run, controlled in zip(runs, (True, False)):
        assert list(run.columns) == q.RECORD_COLUMNS and len(run) == 12
        assert (run.controlled == controlled).all()
        for task in tasks:
            mine = run[run.task == task.name]
            assert list(mine.period) == list(range(6))
            assert list(mine.disturbed) == [False, False, True, True, False, False]
            assert (mine.target_ms == task.target_ms).all()
        assert run.level.between(0, net.levels).all() and (run.latency_ms > 0).all()
        assert list(run.accuracy) == [accuracy[level] for level in run.level]
        assert run.saturated.dtype == bool and run.unreachable.dtype == bool and run.out_of_reach.dtype == bool
        assert (run.out_of_reach == ((run.level == net.levels) & (run.latency_ms > run.target_ms))).all()
    assert (runs[1].level == 0).all() and not runs[1].saturated.any()

    records = pd.concat(runs, ignore_index=True)
    summary = q.summarise(records)
    assert list(summary.columns) == q.SUMMARY_COLUMNS and len(summary) == 2 * 2 * 3
    assert set(summary.phase) == set(q.PHASES)
    assert list(summary[summary.task == "fast"].periods) == [4, 2, 6] * 2
    assert summary.within_10.between(0, 1).all() and summary.abs_error_ms.ge(0).all()
    assert summary.in_reach.between(0, 1).all()

    fig = q.plot_qos(records)
    assert len(fig.axes) == 3 * 2
    fig.savefig(tmp_path / "qos.png")
    assert (tmp_path / "qos.png").stat().st_size > 0


@pytest.mark.parametrize("kwargs, match", [
    ({"tasks": []}, "tasks"), ({"tasks": [q.Task("a", 1.0), q.Task("a", 2.0)]}, "unique"),
    ({"tasks": [q.Task("a", -1.0)]}, "target_ms"), ({"periods": 2}, "periods"), ({"inferences": 0}, "inferences"),
    ({"accuracy": [1.0]}, "accuracy"), ({"profile": [1.0, 0.5]}, "profile"),
])
def test_bad_run_inputs_raise(small, kwargs, match):
    net, x, accuracy, profile = small
    args = {"tasks": [q.Task("a", 1.0)], "accuracy": accuracy, "profile": profile, "periods": 3, "inferences": 1,
            **kwargs}
    with pytest.raises(ValueError, match=match):
        q.run_qos(net, x=x, **args)


@pytest.mark.parametrize("kwargs", [{"threads": 0}, {"sizes": (0, 4)}, {"sizes": (8, 4)}])
def test_bad_disturbance_raises(kwargs):
    with pytest.raises(ValueError, match="disturbance"):
        q.Disturbance(**kwargs)


def test_both_experiments_summarised_as_the_deploy_stage_writes_them(small, tmp_path):
    from tasks.catalog import kind_of

    net, x, accuracy, _ = small
    result = q.experiment(net, {"A": 0.8, "B": 1.2}, "A", x, accuracy, periods=3, inferences=1)
    assert len(result.profile) == len(result.disturbed_profile) == net.levels + 1
    counts = result.records.groupby(["experiment", "controlled"]).size().to_dict()
    assert counts == {("single", True): 3, ("single", False): 3, ("concurrent", True): 6, ("concurrent", False): 6}
    summary = q.experiment_summary(result, accuracy)
    summary.update({"job": "digits-vgg", "family": "digits", "settings": {}, "device": "cpu", "torch_threads": 1})
    kind_of("qos_summary").save(summary, tmp_path / "qos.json", "qos.json")  # schema and Great Expectations
    a = summary["experiments"]["concurrent"]["A"]
    assert a["target_ms"] == pytest.approx(0.8 * result.profile[0])
    assert a["reachable"]["undisturbed"] == (min(result.profile) <= a["target_ms"])
    assert a["uncontrolled"]["all"]["level"] == 0 and a["uncontrolled"]["all"]["accuracy"] == accuracy[0]
    assert set(summary["experiments"]["single"]) == {"A"}
    with pytest.raises(ValueError, match="single"):
        q.experiment(net, {"A": 0.8}, "Z", x, accuracy, periods=3, inferences=1)


def test_the_stage_names_the_jobs_with_dms_variants_when_the_chosen_one_has_none(tmp_path):
    from tasks.context import StageError
    from tasks.deploy import dms_model

    catalog = pd.DataFrame({"variant": ["digits-vgg.dms-L0", "digits-mlp.base"], "source_job": ["digits-vgg", "digits-mlp"],
                            "method": ["dms", "base"], "accuracy": [0.9, 0.8], "family": ["digits", "digits"]})
    with pytest.raises(StageError, match="no DMS variant of job 'digits-mlp'.*digits-vgg"):
        dms_model(catalog, tmp_path / "catalog.csv", tmp_path, "digits-mlp")
    with pytest.raises(StageError, match="jobs with DMS variants: none"):
        dms_model(catalog[catalog["method"] != "dms"], tmp_path / "catalog.csv", tmp_path, None)
