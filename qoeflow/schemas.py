"""Schemas of the JSON documents the stages exchange: one pydantic model per document.

Floats must be finite; unknown keys are refused, so a document says exactly what its model says.
`check_document` raises `ArtifactError` naming the file, the field and the offending value.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel, ValidationError, model_validator

from qoeflow.families import FAMILIES, NAMES, metric_range
from qoeflow.lifecycle.allocation import METHODS as ALLOCATION_METHODS
from qoeflow.params import PEERS
from qoeflow.validate import JOB_STATUSES, ArtifactError

Family = Literal[NAMES]  # type: ignore[valid-type]
Allocator = Literal[ALLOCATION_METHODS]  # type: ignore[valid-type]
Share = Field(gt=0, le=1)  # a QoE value: every factor lies in (0, 1], and so does their weighted sum


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class JobStats(_Doc):
    """One training job of `jobs.json`: what it is, its cost, its status and its test metrics."""

    task: Family
    model: str
    config: dict[str, Any]
    params: int = Field(gt=0)
    macs: int = Field(gt=0)
    size_bytes: int = Field(gt=0)
    t_load: float = Field(gt=0)
    t_test: float = Field(gt=0)
    status: Literal[JOB_STATUSES]  # type: ignore[valid-type]
    diverged_at_epoch: int | None = Field(None, ge=1)
    epochs: int = Field(gt=0)
    epochs_done: int = Field(ge=0)
    train_seconds: float = Field(ge=0)
    test_metrics: dict[str, float]
    epoch0: dict[str, float] | None = None  # validation loss and metrics of the model as initialised (epoch 0)

    @model_validator(mode="after")
    def _consistent(self) -> "JobStats":
        if self.epochs_done > self.epochs:
            raise ValueError(f"epochs_done ({self.epochs_done}) exceeds epochs ({self.epochs})")
        if self.status == "completed" and self.epochs_done != self.epochs:
            raise ValueError(f"a completed job must have all its epochs: epochs_done {self.epochs_done} of {self.epochs}")
        names = FAMILIES[self.task].metric_names
        if self.status == "completed" and sorted(self.test_metrics) != sorted(names):
            raise ValueError(f"test_metrics {sorted(self.test_metrics)} should be the {self.task} metrics {sorted(names)}")
        for name, value in self.test_metrics.items():
            low, high = metric_range(name)
            if not low <= value <= high:
                raise ValueError(f"test_metrics.{name} = {value} lies outside [{low}, {high}]")
        return self


class JobsDoc(RootModel[dict[str, JobStats]]):
    """`jobs.json`: job name -> stats, at least one job."""

    @model_validator(mode="after")
    def _non_empty(self) -> "JobsDoc":
        if not self.root:
            raise ValueError("no jobs")
        return self


class BacktestSummary(_Doc):
    metric: str
    method: str
    mae_last_epoch: float = Field(ge=0)
    vs_last: float | None = Field(None, ge=0)


class BacktestScore(_Doc):
    job: str
    metric: str
    method: str
    used: str
    last_epoch_abs_error: float = Field(ge=0)


class ScoresDoc(_Doc):
    """`scores.json`: the forecast backtest, per method and per job."""

    frac: float = Field(gt=0, lt=1)
    summary: list[BacktestSummary]
    per_job: list[BacktestScore]


class QoEModelDoc(_Doc):
    scales: dict[str, float]
    weights: dict[str, dict[str, float]]
    weights_spec: str | list[float]
    perf_metrics: dict[str, list[str]]

    @model_validator(mode="after")
    def _positive_scales(self) -> "QoEModelDoc":
        bad = {k: v for k, v in self.scales.items() if v <= 0}
        if bad:
            raise ValueError(f"scales must be positive, got {bad}")
        return self


class JobTable(_Doc):
    """One job's candidate epochs (base..max), their cumulative cost and predicted E_all."""

    epochs: list[int]
    cost_seconds: list[float]
    qoe: list[float]
    base_epochs: int = Field(ge=1)
    max_epochs: int = Field(ge=1)
    metrics: dict[str, list[float]] | None = None
    bands: dict[str, dict[Literal["lower", "upper"], list[float]]] | None = None  # the forecasts' bands per metric

    @model_validator(mode="after")
    def _aligned(self) -> "JobTable":
        if self.epochs != list(range(self.base_epochs, self.max_epochs + 1)):
            raise ValueError(f"epochs must run from base_epochs {self.base_epochs} to max_epochs {self.max_epochs}")
        bands = {f"bands.{m}.{side}": v for m, sides in (self.bands or {}).items() for side, v in sides.items()}
        for name, values in {"cost_seconds": self.cost_seconds, "qoe": self.qoe, **(self.metrics or {}), **bands}.items():
            if len(values) != len(self.epochs):
                raise ValueError(f"{name} has {len(values)} values for {len(self.epochs)} epochs")
        if any(c < 0 for c in self.cost_seconds) or any(b < a for a, b in zip(self.cost_seconds, self.cost_seconds[1:])):
            raise ValueError("cost_seconds must be non-negative and non-decreasing")
        if any(not 0 < q <= 1 for q in self.qoe):
            raise ValueError(f"qoe values must lie in (0, 1]: {[q for q in self.qoe if not 0 < q <= 1][:5]}")
        for name, values in (self.metrics or {}).items():
            low, high = metric_range(name)
            outside = [v for v in values if not low <= v <= high]
            if outside:
                raise ValueError(f"metrics.{name}: predictions outside [{low}, {high}]: {outside[:5]}")
        return self


class PlanDoc(_Doc):
    epochs: dict[str, int]
    qoe: dict[str, float]
    E_sum: float = Field(ge=0)
    seconds_used: float = Field(ge=0)
    solve_seconds: float = Field(ge=0)


class AllocationDoc(_Doc):
    """`allocation.json`: the QoE tables, one plan per method, the chosen one, the budget sweep."""

    budget_seconds: float = Field(gt=0)
    base_cost_seconds: float = Field(ge=0)
    full_cost_seconds: float = Field(ge=0)
    weights: dict[str, dict[str, float]]
    qoe_model: QoEModelDoc
    jobs: dict[str, JobTable]
    methods: dict[Allocator, PlanDoc]
    chosen: Allocator
    sweep: list[dict[str, Any]]

    @model_validator(mode="after")
    def _plans_fit_tables(self) -> "AllocationDoc":
        if self.chosen not in self.methods:
            raise ValueError(f"chosen method '{self.chosen}' has no plan (plans: {sorted(self.methods)})")
        for method, plan in self.methods.items():
            for job, epochs in plan.epochs.items():
                if job not in self.jobs:
                    raise ValueError(f"methods.{method}.epochs: job '{job}' has no table")
                if epochs not in self.jobs[job].epochs:
                    raise ValueError(f"methods.{method}.epochs.{job} = {epochs} is not a candidate "
                                     f"({self.jobs[job].base_epochs}..{self.jobs[job].max_epochs})")
            if plan.seconds_used > self.budget_seconds * (1 + 1e-9):
                raise ValueError(f"methods.{method}: uses {plan.seconds_used} s of a {self.budget_seconds} s budget")
        return self


class SelectionDoc(_Doc):
    """`selection.json`: the model the run selects, and the plan's E_sum against reality."""

    selected_job: str
    task: Family
    realised_qoe: float = Share
    method: Allocator
    E_sum_planned: float = Field(ge=0)
    E_sum_replanned: float = Field(ge=0)
    E_sum_realised: float = Field(ge=0)
    budget_seconds: float = Field(gt=0)
    seconds_used: float = Field(ge=0)
    replans: int = Field(ge=0)


class PlannedJob(_Doc):
    """One job in one plan of the closed loop: where it was, what it got and why, and the forecasts behind it."""

    done: int = Field(ge=1)
    target: int = Field(ge=1)
    qoe: float = Share
    reason: str
    left_band: int | None = None
    spent: float = Field(ge=0)  # training seconds the job had spent when the plan was made
    seconds: float = Field(ge=0)  # its training seconds in all at the planned epochs
    forecast: dict[str, dict[str, list[float]]]

    @model_validator(mode="after")
    def _target_from_done(self) -> "PlannedJob":
        if self.target < self.done:
            raise ValueError(f"target {self.target} is below the epochs done ({self.done})")
        return self


class PlanRound(_Doc):
    round: int = Field(ge=0)
    sunk_seconds: float = Field(ge=0)
    remaining_seconds: float
    E_sum: float = Field(ge=0)
    jobs: dict[str, PlannedJob]


class ReplansDoc(_Doc):
    """`replans.json`: the first plan and every re-plan of the continue stage's closed loop."""

    budget_seconds: float = Field(gt=0)
    replan_every: int = Field(ge=1)
    method: Allocator
    plans: list[PlanRound] = Field(min_length=1)


class AshaJob(_Doc):
    epochs: int = Field(ge=0)
    qoe: float = Field(ge=0, le=1)
    train_seconds: float = Field(ge=0)


class PlannerResult(_Doc):
    method: Allocator
    E_sum_realised: float = Field(ge=0)
    E_sum_planned: float = Field(ge=0)
    E_sum_replanned: float = Field(ge=0)
    seconds_used: float = Field(ge=0)


class PeerRun(_Doc):
    """What one Tune scheduler did with the budget."""

    wall_seconds: float = Field(ge=0)
    training_seconds: float = Field(ge=0)
    jobs: dict[str, AshaJob]
    E_sum: float = Field(ge=0)


class AshaDoc(_Doc):
    """`asha.json`: what Ray Tune's schedulers (ASHA, HyperBand) did with the planner's budget, beside the
    planner's result."""

    budget_seconds: float = Field(gt=0)
    peers: dict[Literal[PEERS], PeerRun] = Field(min_length=1)  # type: ignore[valid-type]
    planner: PlannerResult


class Spread(_Doc):
    """A figure over seeds."""

    mean: float
    std: float = Field(ge=0)
    min: float
    max: float


class BanditTheta(_Doc):
    mean: list[float]
    per_seed: list[list[float]]
    distance: Spread | None = None


class BanditMethod(_Doc):
    normalised_qoe: Spread
    regret: Spread
    seconds: Spread
    curve: list[float]
    choices: dict[str, float] | None = None  # paper mode: arm id -> share of rounds
    top_choices: dict[str, float] | None = None  # deployment mode: the five most chosen variants
    theta: BanditTheta | None = None


class BanditSummaryDoc(_Doc):
    """`bandit_summary.json` (stage `deploy`) and `qoeflow bandit --paper`'s summary.json: per method, figures
    over seeds, normalised so the Oracle is 1 and the worst arm 0 (paper 001, Fig. 3)."""

    mode: Literal["paper", "deployment"]
    seeds: int = Field(ge=1)
    rounds: list[int] = Field(min_length=1)
    methods: dict[str, BanditMethod]
    setup: dict[str, Any] | None = None  # paper mode: Table II
    family: str | None = None  # deployment mode from here on
    arms: list[str] | None = None
    features: list[str] | None = None
    oracle_theta: list[float] | None = None
    settings: dict[str, Any] | None = None
    seed_list: list[int] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> "BanditSummaryDoc":
        for name in ("linucb", "oracle", "static"):
            if name not in self.methods:
                raise ValueError(f"methods must include '{name}'")
        for name, m in self.methods.items():
            if len(m.curve) != len(self.rounds):
                raise ValueError(f"methods.{name}.curve has {len(m.curve)} points for {len(self.rounds)} rounds")
        return self


class QoSLevel(_Doc):
    level: int = Field(ge=0)
    accuracy: float = Field(ge=0, le=1)
    latency_ms: float = Field(gt=0)
    disturbed_latency_ms: float = Field(gt=0)


class QoSFigures(_Doc):
    """One task, mode and phase: means over its monitoring periods."""

    periods: float = Field(ge=1)
    latency_ms: float = Field(gt=0)
    abs_error_ms: float = Field(ge=0)
    abs_error_rel: float = Field(ge=0)
    within_10: float = Field(ge=0, le=1)
    in_reach: float = Field(ge=0, le=1)  # share of periods not out of reach (the task at its fastest level, too slow)
    within_10_in_reach: float | None = Field(ge=0, le=1)  # share within 10 % of those; null where there is none
    accuracy: float = Field(ge=0, le=1)
    level: float = Field(ge=0)
    saturated: float = Field(ge=0, le=1)
    unreachable: float = Field(ge=0, le=1)


class QoSTask(_Doc):
    target_ms: float = Field(gt=0)
    reachable: dict[Literal["undisturbed", "disturbed"], bool]
    controlled: dict[Literal["undisturbed", "disturbed", "all"], QoSFigures]
    uncontrolled: dict[Literal["undisturbed", "disturbed", "all"], QoSFigures]


class QoSSummaryDoc(_Doc):
    """`qos_summary.json` (stage `deploy`): DMS levels as profiled, and per experiment (`single`, `concurrent`),
    task, mode and phase the latency-tracking figures of paper 002 §IV-C."""

    job: str
    family: Family
    levels: list[QoSLevel] = Field(min_length=1)
    experiments: dict[Literal["single", "concurrent"], dict[str, QoSTask]]
    seconds: float = Field(ge=0)
    settings: dict[str, Any]
    device: str
    torch_threads: int = Field(ge=1)


def check_document(model: type[BaseModel], doc: Any, label: str) -> None:
    """Validate a parsed JSON document; the error names the file, each bad field and its value."""
    try:
        model.model_validate(doc)
    except ValidationError as exc:
        problems = []
        for e in exc.errors()[:10]:
            field = ".".join(str(p) for p in e["loc"]) or "(document)"
            shown = e.get("input")
            value = "" if isinstance(shown, (dict, list)) else f" (got {shown!r})"
            problems.append(f"field '{field}': {e['msg'].removeprefix('Value error, ')}{value}")
        more = f" … (+{exc.error_count() - 10} more)" if exc.error_count() > 10 else ""
        raise ArtifactError(f"{label}: " + "; ".join(problems) + more) from None


class DMSEntry(_Doc):
    group: str
    factor: float = Field(gt=0, le=1)
    active: int = Field(ge=1)
    width: int = Field(ge=1)
    sensitivity: float
    saving: int = Field(ge=0)


class DMSLevel(_Doc):
    level: int = Field(ge=0)
    predicted_macs: int = Field(gt=0)  # Eq. (2), plus the linear layers
    counted_macs: int = Field(gt=0)
    latency_b1_ms: float = Field(gt=0)
    latency_b64_ms: float = Field(gt=0)


class DMSDetails(_Doc):
    base_accuracy: float = Field(ge=0, le=1)
    target_saving: float = Field(ge=0)
    table: list[DMSEntry]
    levels: list[DMSLevel] = Field(min_length=1)


class PruningIteration(_Doc):
    index: int = Field(ge=0)
    accepted: bool
    val_accuracy: float = Field(ge=0, le=1)
    test_accuracy: float | None = Field(None, ge=0, le=1)
    params: int = Field(gt=0)
    macs: int = Field(gt=0)
    filters: dict[str, int]
    epochs: int = Field(ge=0)
    latency_ms: dict[str, float]
    seconds: float = Field(ge=0)


class PruningDetails(_Doc):
    stopped: str
    iterations: list[PruningIteration] = Field(min_length=1)


class MagnitudeDetails(PruningIteration):
    target_macs: int = Field(gt=0)
    ratio: float = Field(ge=0, le=1)
    macs_error: float


class TuckerLayer(_Doc):
    name: str
    ranks: list[int] = Field(min_length=2, max_length=2)
    retained: list[float] = Field(min_length=2, max_length=2)
    macs_before: int = Field(gt=0)
    macs_after: int = Field(gt=0)
    decomposed: bool
    error: float = Field(ge=0)
    error_tensorly: float | None = Field(None, ge=0)


class TuckerDetails(_Doc):
    variance: float = Field(gt=0, le=1)
    val_accuracy_before_finetune: float = Field(ge=0, le=1)
    val_accuracy_after_finetune: float = Field(ge=0, le=1)
    layers: list[TuckerLayer]


class CompressedJob(_Doc):
    """One job's compression: the DMS table and levels, D-Pruner's iterations, the ℓ1 baseline, Tucker-2."""

    family: Family
    model: str
    dms: DMSDetails
    dpruner: PruningDetails
    magnitude: MagnitudeDetails | None = None
    tucker: TuckerDetails
    seconds: dict[str, float]


class CompressionDoc(_Doc):
    """`compression.json`: the details behind the compress stage's catalog rows, per job."""

    jobs: dict[str, CompressedJob] = Field(min_length=1)


class ExitStats(_Doc):
    depth: int = Field(ge=0)
    threshold: float = Field(ge=0, le=1)
    weight: float = Field(ge=0)
    test_accuracy: float = Field(ge=0, le=1)
    share: float = Field(ge=0, le=1)  # of the test inputs that stop here under the thresholds
    precision: float | None = Field(None, ge=0, le=1)  # of those inputs, the share answered correctly
    macs: int = Field(gt=0)  # of the path to this exit
    latency_b1_ms: float = Field(gt=0)


class EarlyExitStats(_Doc):
    accuracy: float = Field(ge=0, le=1)
    full_accuracy: float = Field(ge=0, le=1)
    mean_macs: float = Field(gt=0)
    full_macs: int = Field(gt=0)
    mean_ms: float = Field(gt=0)
    full_ms: float = Field(gt=0)
    macs_reduction: float = Field(gt=0)
    latency_reduction: float = Field(gt=0)
    accuracy_drop_points: float


class MultiExitJob(_Doc):
    """One job's multi-exit network: its exits and the early-exit policy against the base network."""

    family: Family
    model: str
    aggregate: bool
    focal_gamma: float = Field(ge=0)
    target_precision: float = Field(gt=0, le=1)
    train_seconds: float = Field(ge=0)
    base_accuracy: float = Field(ge=0, le=1)
    exits: list[ExitStats] = Field(min_length=1)
    early_exit: EarlyExitStats


class ExitsDoc(_Doc):
    """`exits.json`: the multi-exit stage's networks, per job."""

    jobs: dict[str, MultiExitJob] = Field(min_length=1)
