"""DMS QoS control measured on this machine (paper 002, §IV-C, Figs. 11–14): concurrent inference tasks share
one DMSNet, each with its own target latency and PI controller (qoeflow/lifecycle/qos.py), over monitoring
periods with a disturbance thread competing for the CPU during the middle third.

Scheduling, as in the paper's concurrent experiment: the tasks run round-robin on the calling thread (when
one task's inference completes, the next task's starts), each inference timed alone. On a 2-core machine,
one thread per task would time each task's inference together with its neighbours' CPU and GIL waits, so a
task's latency would depend on the other tasks' levels and on the OS scheduler; round-robin keeps the
tasks' latencies apart and leaves the disturbance as the only competitor. A monitoring period is
`inferences` inferences of every task; a task's measured latency is the median of its inferences in it.

Threads: `torch.set_num_threads` applies to the whole process, so `run_qos` sets `threads` (default 1) for
the run and restores the previous count afterwards; the disturbance's matrix multiplications therefore run
on that many threads each, and the disturbance's load is set by its number of Python threads (its
multiplications release the GIL).
"""

from __future__ import annotations

import statistics
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from qoeflow.lifecycle.dms import DMSNet
from qoeflow.lifecycle.qos import DEFAULT_SPEED, PIController, check_target
from qoeflow.models.latency import steady_allocator, torch_threads

if TYPE_CHECKING:
    from matplotlib.figure import Figure

RECORD_COLUMNS = ["controlled", "task", "period", "level", "latency_ms", "target_ms", "disturbed", "saturated",
                  "unreachable", "out_of_reach", "accuracy"]
SUMMARY_COLUMNS = ["controlled", "task", "phase", "periods", "target_ms", "latency_ms", "abs_error_ms",
                   "abs_error_rel", "within_10", "in_reach", "within_10_in_reach", "accuracy", "level", "saturated",
                   "unreachable"]
PHASES = ("undisturbed", "disturbed", "all")
WITHIN = 0.10  # a period is on target when its latency is within 10% of the target


@dataclass(frozen=True)
class Task:
    """An inference task: its name and target latency per inference."""

    name: str
    target_ms: float


@dataclass(frozen=True)
class Disturbance:
    """Background load: `threads` Python threads multiplying random n×n float32 matrices, n in `sizes`."""

    threads: int = 1
    sizes: tuple[int, int] = (128, 512)

    def __post_init__(self) -> None:
        if isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 1:
            raise ValueError(f"disturbance threads must be an integer ≥ 1, got {self.threads!r}")
        low, high = self.sizes
        if not (isinstance(low, int) and isinstance(high, int) and 1 <= low <= high):
            raise ValueError(f"disturbance sizes must be integers 1 ≤ low ≤ high, got {self.sizes!r}")


def disturbed_periods(periods: int) -> range:
    """The middle third of `periods` (the paper's 50th to 100th of 150)."""
    return range(periods // 3, 2 * periods // 3)


@contextmanager
def disturbing(disturbance: Disturbance, seed: int = 0) -> Iterator[None]:
    """Run `disturbance` in daemon threads for the duration of the block."""
    stop = threading.Event()

    def work(rng: np.random.Generator) -> None:
        low, high = disturbance.sizes
        while not stop.is_set():
            n = int(rng.integers(low, high + 1))
            a = torch.randn(n, n)
            torch.mm(a, a)

    workers = [threading.Thread(target=work, args=(np.random.default_rng([seed, i]),), daemon=True,
                                name=f"qos-disturbance-{i}") for i in range(disturbance.threads)]
    for w in workers:
        w.start()
    try:
        yield
    finally:
        stop.set()
        for w in workers:
            w.join()


@torch.inference_mode()
def level_accuracy(net: DMSNet, x_val: torch.Tensor, y_val: torch.Tensor, batch_size: int = 512) -> list[float]:
    """Validation accuracy of every DMS level (index = level), in eval mode."""
    was_training = net.training
    net.eval()
    try:
        out = []
        for level in range(net.levels + 1):
            right = sum(int((net(x_val[i:i + batch_size], level).argmax(dim=1) == y_val[i:i + batch_size]).sum())
                        for i in range(0, len(x_val), batch_size))
            out.append(right / len(x_val))
        return out
    finally:
        net.train(was_training)


def _timed_ms(net: DMSNet, x: torch.Tensor, level: int) -> float:
    start = time.perf_counter()
    net(x, level)
    return (time.perf_counter() - start) * 1e3


@torch.inference_mode()
def profile_levels(net: DMSNet, x: torch.Tensor, *, inferences: int = 100, threads: int = 1) -> list[float]:
    """Median latency (ms) of one inference of `x` at every level, levels interleaved, after a warm-up
    of `inferences` // 10 + 1 rounds."""
    steady_allocator()
    with torch_threads(threads):
        levels = range(net.levels + 1)
        for _ in range(inferences // 10 + 1):
            for level in levels:
                net(x, level)
        times: list[list[float]] = [[] for _ in levels]
        for _ in range(inferences):
            for level in levels:
                times[level].append(_timed_ms(net, x, level))
    return [statistics.median(t) for t in times]


def _accuracy_table(accuracy: Sequence[float] | Mapping[int, float], levels: int) -> list[float]:
    """`accuracy` (a sequence indexed by level, or level -> accuracy) as a list over levels 0..`levels`."""
    table = [accuracy.get(level) for level in range(levels + 1)] if isinstance(accuracy, Mapping) else list(accuracy)
    if len(table) != levels + 1 or any(a is None for a in table):
        raise ValueError(f"accuracy must give levels 0..{levels}, got {accuracy!r}")
    return [float(a) for a in table]


def _check_run(tasks: Sequence[Task], periods: int, inferences: int, threads: int) -> None:
    if not tasks:
        raise ValueError("tasks must not be empty")
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise ValueError(f"task names must be unique, got {names}")
    for t in tasks:
        check_target(t.target_ms)
    for what, value, low in (("periods", periods, 3), ("inferences", inferences, 1), ("threads", threads, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{what} must be an integer ≥ {low}, got {value!r}")


@torch.inference_mode()
def run_qos(net: DMSNet, tasks: Sequence[Task], x: torch.Tensor, accuracy: Sequence[float] | Mapping[int, float],
            *, periods: int = 150, inferences: int = 50, controlled: bool = True,
            profile: Sequence[float] | None = None, speed: float = DEFAULT_SPEED,
            disturbance: Disturbance | None = Disturbance(), threads: int = 1, seed: int = 0) -> pd.DataFrame:
    """Run `tasks` round-robin on the shared `net` (one inference = `net(x, level)`) for `periods` monitoring
    periods of `inferences` inferences per task, `disturbance` active in the middle third, on `threads`
    torch threads. Controlled: each task's PI controller, tuned on `profile` (level → ms, measured here when
    None) with `speed` (`Gains.for_step`), sets its level every period; otherwise every task runs at level 0.
    One row per task and period (`RECORD_COLUMNS`); a row's accuracy is `accuracy[level]`."""
    _check_run(tasks, periods, inferences, threads)
    steady_allocator()
    accuracies = _accuracy_table(accuracy, net.levels)
    was_training = net.training
    net.eval()
    try:
        if controlled and profile is None:
            profile = profile_levels(net, x, threads=threads)
        if controlled and len(profile) != net.levels + 1:
            raise ValueError(f"profile must give the latency of levels 0..{net.levels}, got {len(profile)} values")
        controllers = ({t.name: PIController.from_table(t.target_ms, profile, speed) for t in tasks}
                       if controlled else {})
        with torch_threads(threads):
            for level in range(net.levels + 1):  # warm-up
                net(x, level)
            return pd.DataFrame(_periods(net, tasks, x, accuracies, controllers, periods, inferences, disturbance,
                                         seed), columns=RECORD_COLUMNS)
    finally:
        net.train(was_training)


def _periods(net: DMSNet, tasks: Sequence[Task], x: torch.Tensor, accuracies: Sequence[float],
             controllers: Mapping[str, PIController], periods: int, inferences: int,
             disturbance: Disturbance | None, seed: int) -> list[dict]:
    window = disturbed_periods(periods)
    rows = []
    for phase in (range(window.start), window, range(window.stop, periods)):
        disturbed = phase is window and disturbance is not None
        with disturbing(disturbance, seed) if disturbed else nullcontext():
            for period in phase:
                rows += _period(net, tasks, x, accuracies, controllers, period, inferences, disturbed)
    return rows


def _period(net: DMSNet, tasks: Sequence[Task], x: torch.Tensor, accuracies: Sequence[float],
            controllers: Mapping[str, PIController], period: int, inferences: int, disturbed: bool) -> list[dict]:
    levels = {t.name: controllers[t.name].level if controllers else 0 for t in tasks}
    times: dict[str, list[float]] = {t.name: [] for t in tasks}
    for _ in range(inferences):
        for t in tasks:
            times[t.name].append(_timed_ms(net, x, levels[t.name]))
    rows = []
    for t in tasks:
        latency = statistics.median(times[t.name])
        step = controllers[t.name].step(latency) if controllers else None
        rows.append({"controlled": bool(controllers), "task": t.name, "period": period, "level": levels[t.name],
                     "latency_ms": latency, "target_ms": float(t.target_ms), "disturbed": disturbed,
                     "saturated": bool(step and step.saturated), "unreachable": bool(step and step.unreachable),
                     # the fastest level missed the target: no level could have met it in this period
                     "out_of_reach": levels[t.name] == net.levels and latency > t.target_ms,
                     "accuracy": accuracies[levels[t.name]]})
    return rows


def summarise(records: pd.DataFrame) -> pd.DataFrame:
    """Per run (controlled or not), task and phase (`PHASES`): mean latency, mean absolute tracking error (ms
    and relative to the target), share of periods within 10% of the target, share of periods in which the
    target was in reach (not `out_of_reach`) and the share within 10% among those (NaN where there is none),
    mean accuracy, mean level, shares of saturated and of unreachable periods (`SUMMARY_COLUMNS`)."""
    missing = set(RECORD_COLUMNS) - set(records.columns)
    if missing:
        raise ValueError(f"records lack columns {sorted(missing)}")
    r = records.assign(abs_error_ms=(records.latency_ms - records.target_ms).abs())
    r = r.assign(abs_error_rel=r.abs_error_ms / r.target_ms)
    r = r.assign(within_10=r.abs_error_rel <= WITHIN)
    rows = []
    for (controlled, task), group in r.groupby(["controlled", "task"], sort=False):
        for phase in PHASES:
            part = group if phase == "all" else group[group.disturbed == (phase == "disturbed")]
            in_reach = ~part.out_of_reach.astype(bool)
            rows.append({"controlled": controlled, "task": task, "phase": phase, "periods": len(part),
                         "target_ms": group.target_ms.iloc[0], "latency_ms": part.latency_ms.mean(),
                         "abs_error_ms": part.abs_error_ms.mean(), "abs_error_rel": part.abs_error_rel.mean(),
                         "within_10": part.within_10.mean(), "in_reach": in_reach.mean(),
                         "within_10_in_reach": part.within_10[in_reach].mean() if in_reach.any() else float("nan"),
                         "accuracy": part.accuracy.mean(),
                         "level": part.level.mean(), "saturated": part.saturated.mean(),
                         "unreachable": part.unreachable.mean()})
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def plot_qos(records: pd.DataFrame) -> Figure:
    """Figs. 11 and 13: per task (columns), latency per period with the target and the disturbance shaded,
    then the DMS level and the accuracy; controlled and uncontrolled runs as they appear in `records`.
    Returns the matplotlib Figure (the caller saves it)."""
    from matplotlib.figure import Figure  # no pyplot: nothing global to close; saving renders with Agg

    tasks = list(dict.fromkeys(records.task))
    if not tasks:
        raise ValueError("records are empty")
    fig = Figure(figsize=(4.2 * len(tasks), 7.5), layout="constrained")
    axes = fig.subplots(3, len(tasks), sharex=True, squeeze=False)
    styles = {True: {"color": "tab:blue", "label": "DMS control"},
              False: {"color": "tab:gray", "label": "no control", "linestyle": "--"}}
    for col, task in enumerate(tasks):
        mine = records[records.task == task]
        for controlled, run in mine.groupby("controlled"):
            run = run.sort_values("period")
            for row, column in enumerate(("latency_ms", "level", "accuracy")):
                axes[row][col].plot(run.period, run[column], linewidth=1, **styles[bool(controlled)])
        axes[0][col].axhline(mine.target_ms.iloc[0], color="tab:red", linewidth=1, label="target")
        disturbed = mine.period[mine.disturbed]
        if len(disturbed):
            for ax in axes[:, col]:
                ax.axvspan(disturbed.min() - 0.5, disturbed.max() + 0.5, color="tab:orange", alpha=0.12,
                           label="disturbance")
        axes[0][col].set_title(f"{task} (target {mine.target_ms.iloc[0]:.3g} ms)")
        axes[2][col].set_xlabel("monitoring period")
    for row, label in enumerate(("latency (ms)", "DMS level", "accuracy")):
        axes[row][0].set_ylabel(label)
    axes[0][0].legend(fontsize="small")
    return fig


@dataclass(frozen=True)
class Experiment:
    """Both experiments of paper 002 §IV-C on one shared DMSNet: one task alone, then all tasks together, each
    with DMS control and without; the level profiles measured before, undisturbed and disturbed."""

    records: pd.DataFrame  # RECORD_COLUMNS plus `experiment` ("single" or "concurrent")
    profile: list[float]  # level -> ms, undisturbed
    disturbed_profile: list[float]  # level -> ms, with the disturbance running
    seconds: float


def experiment(net: DMSNet, targets: Mapping[str, float], single: str, x: torch.Tensor,
               accuracy: Sequence[float] | Mapping[int, float], *, periods: int = 150, inferences: int = 5,
               disturbance: Disturbance = Disturbance(), threads: int = 1, speed: float = DEFAULT_SPEED,
               seed: int = 0) -> Experiment:
    """Profile every level (undisturbed and disturbed), then run task `single` alone and all `targets`
    (task -> target as a share of level 0's undisturbed latency) together, controlled and not."""
    if single not in targets:
        raise ValueError(f"single task '{single}' is not among the targets {list(targets)}")
    start = time.perf_counter()
    profile = profile_levels(net, x, threads=threads)
    with disturbing(disturbance, seed):
        disturbed_profile = profile_levels(net, x, threads=threads)
    tasks = [Task(name, share * profile[0]) for name, share in targets.items()]
    runs = []
    for name, chosen in (("single", [t for t in tasks if t.name == single]), ("concurrent", tasks)):
        for controlled in (True, False):
            records = run_qos(net, chosen, x, accuracy, periods=periods, inferences=inferences, controlled=controlled,
                              profile=profile, speed=speed, disturbance=disturbance, threads=threads, seed=seed)
            runs.append(records.assign(experiment=name))
    return Experiment(pd.concat(runs, ignore_index=True), profile, disturbed_profile, time.perf_counter() - start)


def reachable(target_ms: float, profile: Sequence[float]) -> bool:
    """Whether some level's profiled latency meets the target (the controller's test too: a target the fastest
    level misses is unreachable; coming within the 10 % band of it is tracking, not reaching it)."""
    return min(profile) <= target_ms


def experiment_summary(result: Experiment, accuracy: Sequence[float] | Mapping[int, float]) -> dict:
    """Plain-JSON summary: the level table, and per experiment, task, mode and phase `summarise`'s figures,
    with whether the target is reachable undisturbed and disturbed (by the profiles)."""
    levels = len(result.profile) - 1
    acc = _accuracy_table(accuracy, levels)
    out = {"levels": [{"level": k, "accuracy": acc[k], "latency_ms": result.profile[k],
                       "disturbed_latency_ms": result.disturbed_profile[k]} for k in range(levels + 1)],
           "seconds": result.seconds, "experiments": {}}
    for name, records in result.records.groupby("experiment", sort=False):
        tasks: dict = {}
        for r in summarise(records.drop(columns="experiment")).to_dict("records"):
            task = tasks.setdefault(r["task"], {
                "target_ms": r["target_ms"],
                "reachable": {"undisturbed": reachable(r["target_ms"], result.profile),
                              "disturbed": reachable(r["target_ms"], result.disturbed_profile)}})
            mode = "controlled" if r["controlled"] else "uncontrolled"
            task.setdefault(mode, {})[r["phase"]] = {k: None if pd.isna(r[k]) else float(r[k])
                                                     for k in SUMMARY_COLUMNS[3:] if k != "target_ms"}
        out["experiments"][name] = tasks
    return out
