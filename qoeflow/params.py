"""`params.yaml`: every tunable number, one section per stage, validated by pydantic.

Effective params = the file, deep-merged with the DAG's `overrides`, then with `--set KEY=VALUE`
assignments. Errors name the file, the dotted key and what is allowed.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from qoeflow import precisions
from qoeflow.families import FAMILIES, NAMES
from qoeflow.lifecycle import allocation, curves


class ParamsError(ValueError):
    """Params that cannot run; the message names the file and the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


TrainData = create_model(  # one settings section per task family of the registry
    "TrainData", __base__=_Strict, **{name: (f.data, f.data()) for name, f in FAMILIES.items()})
Family = Literal[NAMES]  # type: ignore[valid-type]


class Job(_Strict):
    """One training job: a model of a task family with its optimiser settings."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    task: Family
    model: str
    epochs: int = Field(gt=0, le=10_000)
    max_epochs: int | None = Field(None, gt=0, le=10_000, description="most epochs the planner may give (default 2 × epochs)")
    batch_size: int = Field(64, gt=0, le=4096)
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = Field(1e-3, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    seed: int = 0

    @model_validator(mode="after")
    def _max_at_least_base(self) -> "Job":
        if self.max_epochs is None:
            self.max_epochs = 2 * self.epochs
        if self.max_epochs < self.epochs:
            raise ValueError(f"max_epochs ({self.max_epochs}) must be at least epochs ({self.epochs})")
        return self


class TrainParams(_Strict):
    threads_per_job: int = Field(1, ge=1, le=64)
    t_test_repeats: int = Field(5, ge=1, le=100)
    data: TrainData = TrainData()
    jobs: list[Job] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_and_known(self) -> "TrainParams":
        names = [j.name for j in self.jobs]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"job names must be unique; repeated: {dupes}")
        for i, job in enumerate(self.jobs):
            models = FAMILIES[job.task].models
            if job.model not in models:
                raise ValueError(
                    f"jobs.{i}.model: unknown model '{job.model}' for task '{job.task}' (allowed: {', '.join(models)})"
                )
        return self


FORECAST_METHODS = curves.METHODS  # the methods are the code's, never a second list
ALLOCATION_METHODS = allocation.METHODS


class ForecastParams(_Strict):
    method: Literal[FORECAST_METHODS] = "auto"  # type: ignore[valid-type]
    metrics: dict[Family, list[str]] = {name: list(f.forecast_metrics) for name, f in FAMILIES.items()}
    backtest_frac: float = Field(0.5, gt=0, lt=1)
    backtest_methods: list[Literal[FORECAST_METHODS]] = list(FORECAST_METHODS)  # type: ignore[valid-type]
    seed: int = 0

    @model_validator(mode="after")
    def _known_curves(self) -> "ForecastParams":
        for task, metrics in self.metrics.items():
            known = ["train_loss", "val_loss", *FAMILIES[task].metric_names]
            unknown = [m for m in metrics if m not in known]
            if unknown:
                raise ValueError(f"metrics.{task}: no curve {unknown} in {task} curves (allowed: {', '.join(known)})")
        return self


class QoEParams(_Strict):
    weights: str | list[float] = "w1"
    metrics: dict[Family, list[str]] = {name: list(f.qoe_metrics) for name, f in FAMILIES.items()}

    @model_validator(mode="after")
    def _valid_weights(self) -> "QoEParams":
        from qoeflow.lifecycle.planning import weights_for

        for task, metrics in self.metrics.items():
            unknown = [m for m in metrics if m not in FAMILIES[task].metric_names]
            if unknown:
                raise ValueError(f"metrics.{task}: {unknown} are not {task} metrics "
                                 f"(allowed: {', '.join(FAMILIES[task].metric_names)})")
            weights_for(self.weights, metrics)  # raises with the reason
        return self


class AllocateParams(_Strict):
    probe_epochs: int = Field(2, ge=1, le=10_000, description="epochs every job trains before the first plan")
    replan_every: int = Field(2, ge=1, le=10_000, description="epochs between re-plans in the continue stage")
    budget_seconds: float | None = Field(None, gt=0, description="total training seconds, probes included; "
                                                                 "default from budget_fraction")
    budget_fraction: float = Field(0.4, ge=0, le=1, description="the probes' seconds plus this share of what "
                                                                 "training every job on to its max_epochs would add")
    methods: list[Literal[ALLOCATION_METHODS]] = list(ALLOCATION_METHODS)  # type: ignore[valid-type]
    chosen: Literal[ALLOCATION_METHODS] = "exact"  # type: ignore[valid-type]
    sweep_points: int = Field(8, ge=2, le=100)
    seed: int = 0

    @model_validator(mode="after")
    def _chosen_is_run(self) -> "AllocateParams":
        if self.chosen not in self.methods:
            raise ValueError(f"chosen ({self.chosen}) must be one of methods {self.methods}")
        return self


class DMSParams(_Strict):
    """DMS (paper 002 §III): the table's factors (the paper's 0.7) and the least share of a layer kept."""

    base_factor: float = Field(0.7, gt=0, lt=1)
    min_factor: float = Field(0.5, gt=0, lt=1)
    saving: float | None = Field(None, gt=0, lt=1, description="MACs each level saves, as a share; default from base_factor")
    round_to: int | None = Field(None, ge=1, le=256, description="active channels in multiples of this (CPU kernels work in blocks of 8 or 16)")


class DPrunerParams(_Strict):
    """D-Pruner (thesis 004 ch. 4, Algorithm 2) and the Torch-Pruning ℓ1 baseline at the same MACs."""

    ratio: float = Field(0.2, gt=0, lt=1, description="K: share of each layer's filters the masking blocks zero")
    threshold: float = Field(0.95, gt=0, lt=1, description="removal probability above which a filter goes")
    accuracy_budget: float = Field(0.01, ge=0, le=1, description="most validation accuracy lost (paper 1 point)")
    max_iterations: int = Field(3, ge=1, le=50)
    block_epochs: int = Field(1, ge=0, le=100)
    net_epochs: int = Field(1, ge=0, le=100)
    finetune_epochs: int = Field(2, ge=0, le=100)
    round_to: int | None = Field(None, ge=1, le=256, description="keep channel counts multiples of this (null: exact)")


class TuckerParams(_Strict):
    """Tucker-2 (thesis 004 §3.4.4): retained variance of each mode's unfolding, and fine-tuning."""

    variance: float = Field(0.9, gt=0, le=1)
    finetune_epochs: int = Field(2, ge=0, le=100)


class CompressParams(_Strict):
    """Stage `compress`: which trained jobs (convolutional models) to compress, and each method's settings."""

    jobs: list[str] = Field(min_length=1)
    lr: float = Field(1e-3, gt=0, description="fine-tuning learning rate (Adam); see benchmarks/results/compression.md")
    latency_seconds: float = Field(0.2, gt=0, le=10, description="timing per latency measurement (median of blocks)")
    seed: int = 0
    dms: DMSParams = DMSParams()
    dpruner: DPrunerParams = DPrunerParams()
    tucker: TuckerParams = TuckerParams()


class MultiExitParams(_Strict):
    """Stage `multiexit` (thesis 004 ch. 5): exits along trained ResNets, trained together, with thresholds."""

    jobs: list[str] = Field(min_length=1)
    depths: list[int] = Field([0, 1, 2, 3], min_length=1, description="backbone stages an exit follows (the last: the base classifier)")
    weights: list[float] = Field([1.0, 1.0, 1.0, 1.0], min_length=1, description="w_i of the loss Σ w_i·L_i, one per exit")
    focal_gamma: float = Field(0.0, ge=0, le=10, description="focal loss γ of the exits (0: cross-entropy)")
    aggregate: bool = False
    head_width: int = Field(32, ge=1, le=1024)
    epochs: int = Field(4, ge=0, le=1000)
    lr: float = Field(1e-3, gt=0)
    target_precision: float = Field(0.99, gt=0, le=1, description="precision of the samples an exit lets out, on validation")
    latency_seconds: float = Field(0.2, gt=0, le=10)
    seed: int = 0

    @model_validator(mode="after")
    def _one_weight_per_exit(self) -> "MultiExitParams":
        if sorted(set(self.depths)) != self.depths or min(self.depths) < 0:
            raise ValueError(f"depths must be distinct, increasing and ≥ 0, got {self.depths}")
        if len(self.weights) != len(self.depths):
            raise ValueError(f"weights must have one entry per exit ({len(self.depths)}), got {self.weights}")
        if any(w < 0 for w in self.weights) or not any(w > 0 for w in self.weights):
            raise ValueError(f"weights must be ≥ 0 and not all 0, got {self.weights}")
        return self


class CachingParams(_Strict):
    """Stage `bench`, convolutional caching (thesis 004 §3.4.3): trained crowd models on generated video clips.
    Defaults picked by the sweep of benchmarks/caching.py (benchmarks/results/caching.md)."""

    jobs: list[str] = Field(["crowd-mcnn", "crowd-csrnet", "crowd-vggdecoder", "crowd-resnet"], min_length=1,
                            description="trained crowd-counting jobs")
    clips: list[str] = Field(["still", "calm", "busy"], min_length=1, description="presets of qoeflow/data/video.py")
    frames: int = Field(120, ge=2, le=100_000)
    height: int = Field(128, ge=16, le=427)
    width: int = Field(128, ge=16, le=640)
    seed: int = 0
    n_convs: dict[str, int] = Field({"mcnn": 1, "csrnet": 1, "vggdecoder": 1, "resnet": 1},
                                    description="per crowd model: the first N convolutions are cached")
    grid: tuple[int, int] = Field((8, 8), description="blocks per column and per row")
    bins: int = Field(16, ge=2, le=256, description="histogram bins per channel")
    threshold: float = Field(0.01, ge=0, le=1, description="chi-square distance from which a block changed")
    pixel_threshold: float = Field(0.1, ge=0, le=1, description="the pixel-difference peer's per-pixel threshold")
    max_age: int | None = Field(30, ge=1, description="frames a cached block lives (null: forever)")

    @field_validator("n_convs")
    @classmethod
    def _positive_depths(cls, value: dict[str, int]) -> dict[str, int]:
        if any(n < 1 for n in value.values()):
            raise ValueError(f"n_convs must be at least 1 per model, got {value}")
        return value

    @field_validator("grid")
    @classmethod
    def _positive_grid(cls, value: tuple[int, int]) -> tuple[int, int]:
        if min(value) < 1:
            raise ValueError(f"grid must be two positive block counts, got {list(value)}")
        return value


class BenchParams(_Strict):
    """Stage `bench`: every catalog variant at every precision and batch size on one device, and caching."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    precisions: list[str] | None = Field(None, min_length=1, description="BASE[+cl][+fold][+compile]; default: the device's own list")
    batches: list[int] = Field([1, 8, 64], min_length=1)
    threads: int = Field(1, ge=1, le=64, description="CPU threads while timing")
    min_run_time: float = Field(0.1, gt=0, le=10, description="seconds of timed calls per variant, precision and batch")
    caching: CachingParams = CachingParams()

    @field_validator("precisions")
    @classmethod
    def _known_precisions(cls, value: list[str] | None) -> list[str] | None:
        for name in value or []:
            precisions.parse(name)
        return value

    @field_validator("batches")
    @classmethod
    def _positive_batches(cls, value: list[int]) -> list[int]:
        if any(b < 1 for b in value) or len(set(value)) != len(value):
            raise ValueError(f"batches must be distinct positive integers, got {value}")
        return value


class PopulationParams(_Strict):
    """Stage `deploy`: the simulated devices and users (qoeflow/lifecycle/deployment.py, `Population`)."""

    cpu_median: float = Field(0.5, gt=0, description="device speed relative to the measuring machine (log-normal median)")
    cpu_sigma: float = Field(1.5, ge=0, le=5, description="log-normal sigma of device speed")
    ram_gb: list[float] = Field([1.0, 2.0, 4.0, 8.0], min_length=1, description="device RAM sizes, drawn uniformly")
    memory_share: float = Field(0.25, gt=0, le=1, description="share of RAM a model may take")
    size_scale: float = Field(1000.0, gt=0, description="catalog model bytes × this = size on the devices")
    energy_sigma: float = Field(0.5, ge=0, le=5, description="log-normal sigma of a device's energy per MAC")
    latency_budget_ms: float = Field(5.0, gt=0, description="device latency that costs one unit of QoE")
    weights: tuple[float, float, float] = Field((6.0, 2.0, 1.0), description="Dirichlet concentration over the "
                                                "users' weights of accuracy, latency and energy")
    max_delay: int = Field(40, ge=1, le=10_000, description="ratings arrive 1..max_delay rounds late")
    observation: float = Field(0.5, ge=0, description="rating noise variance is observation / delay²")

    @field_validator("ram_gb", "weights")
    @classmethod
    def _positive(cls, value):
        if min(value) <= 0:
            raise ValueError(f"must be positive, got {list(value)}")
        return value


class BanditParams(_Strict):
    """Stage `deploy`: contextual-bandit model selection over the catalog (paper 001, Alg. 1)."""

    family: str | None = Field(None, description="the catalog family whose variants are the arms (None: the family "
                                                 "with the most variants)")
    rounds: int = Field(5000, ge=10, le=1_000_000)
    alpha: float = Field(1.0, ge=0, description="UCB exploration weight (Eq. 8)")
    delta: float = Field(1.0, gt=0, description="prior precision δ (Eq. 6)")
    mismatch: float = Field(0.3, gt=0, description="the bandit's λ^η: QoE variance its linear model misses")
    peers: list[Literal["contextualbandits", "mabwiser"]] = Field(["contextualbandits", "mabwiser"],
                                                                 description="peer LinUCBs run on the same stream")
    population: PopulationParams = PopulationParams()


class QoSParams(_Strict):
    """Stage `deploy`: PI control of DMS levels for latency targets (paper 002 §III-C), on this machine."""

    job: str | None = Field(None, description="the job whose DMS variants (catalog rows JOB.dms-L<k>) are run "
                                              "(None: the catalog's first job with DMS variants)")
    batch: int = Field(16, ge=1, le=1024, description="inputs per inference")
    periods: int = Field(150, ge=3, le=100_000, description="monitoring periods; the disturbance runs in the middle third")
    inferences: int = Field(5, ge=1, le=10_000, description="inferences per task per period (latency: their median)")
    targets: dict[str, float] = Field({"A": 0.75, "B": 0.85, "C": 0.95}, min_length=1,
                                      description="task -> target latency as a share of level 0's profiled latency")
    single: str = Field("A", description="the task of the one-task experiment")
    disturbance_threads: int = Field(1, ge=1, le=64, description="threads multiplying matrices in the middle third")
    threads: int = Field(1, ge=1, le=64, description="torch threads while running")
    speed: float = Field(0.4, gt=0, le=1, description="share of the level error the controller removes per period")

    @model_validator(mode="after")
    def _known_single(self) -> "QoSParams":
        if self.single not in self.targets:
            raise ValueError(f"single: '{self.single}' is not a task of targets ({', '.join(self.targets)})")
        if any(not 0 < t <= 10 for t in self.targets.values()):
            raise ValueError(f"targets must be shares of level 0's latency in (0, 10], got {self.targets}")
        return self


class DeployParams(_Strict):
    """Stage `deploy`: the bandit per seed (fanned out), then latency control of the DMS model."""

    seeds: list[int] = Field([0, 1, 2, 3], min_length=1)
    bandit: BanditParams = BanditParams()
    qos: QoSParams = QoSParams()


class ClipParams(_Strict):
    """Stage `video`: one generated sprites clip (qoeflow/data/video.py, `sprites_clip`)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="the clip's name in the index and the tables")
    seed: int = Field(0, ge=0, description="the clip's random seed (background, tracks, looks, noise)")
    frames: int = Field(2000, ge=2, le=100_000)
    objects: int = Field(3, ge=1, le=50, description="objects on screen on average")
    moving: float = Field(0.7, ge=0, le=1, description="share of the objects that walk")
    speed: float = Field(1.0, ge=0, le=20, description="walking speed, pixels per frame")
    turnover: float = Field(6.0, ge=0, description="objects vanishing (and arriving) per 100 frames")
    classes: list[int] | None = Field(None, min_length=1, description="the digits that appear (None: all ten)")

    @model_validator(mode="after")
    def _known_classes(self) -> "ClipParams":
        if self.classes is not None and (len(set(self.classes)) != len(self.classes)
                                         or any(not 0 <= c <= 9 for c in self.classes)):
            raise ValueError(f"classes must be distinct digits 0-9, got {self.classes}")
        if self.turnover > 100 * self.objects:
            raise ValueError(f"turnover must be at most 100 × objects = {100 * self.objects}, got {self.turnover}")
        return self


class VideoParams(_Strict):
    """Stage `video`: Focus-style indexing of generated clips with a multi-exit network, and queries (thesis 004
    §5.3.1; qoeflow/lifecycle/video_index.py)."""

    job: str | None = Field(None, description="the multi-exit job (catalog rows JOB.exit-<i>; None: the first)")
    ground_truth: list[str] | None = Field(None, min_length=1, description="the GT-CNN's catalog variants, an "
                                           "ensemble (None: the most accurate sprites variants, as many as `ensemble` says)")
    ensemble: Literal["auto"] | Annotated[int, Field(ge=1, le=20)] = Field(
        "auto", description="variants in the default GT-CNN (auto: the number most accurate on the sprites "
                            "validation split)")
    height: int = Field(128, ge=32, le=4096)
    width: int = Field(128, ge=32, le=4096)
    clips: list[ClipParams] = Field(
        [ClipParams(name="mixed", seed=1), ClipParams(name="sparse", seed=2, objects=2, classes=[0, 1, 2, 3, 4]),
         ClipParams(name="busy", seed=3, objects=5, moving=0.9, speed=1.5, classes=[4, 5, 6, 7, 8, 9])], min_length=1)
    sample: float = Field(0.1, gt=0, le=1, description="share of each clip's objects (the first ones) labelled "
                                                       "by the GT-CNN to choose k′ and the exits")
    recall_target: float = Field(0.99, gt=0, le=1, description="recall of the index on the labelled sample")
    k_max: int = Field(3, ge=1, le=10, description="largest k′ (top classes per exit) tried")
    max_clusters: int = Field(2000, ge=1, description="clusters per class (Focus's N)")
    radius: float = Field(0.15, ge=0, le=2, description="feature distance (unit vectors) within which an "
                                                       "object joins a cluster")
    exit_precision: float = Field(0.99, gt=0, le=1, description="precision against the GT-CNN that each "
                                                                "query-time exit's threshold is calibrated to")
    min_area: int = Field(20, ge=1, description="smallest foreground blob that is an object, pixels")
    repeats: int = Field(2, ge=1, le=20, description="timed runs of each indexed query (its median) after an "
                                                     "untimed warm-up: the first runs of a batch shape cost more")
    threads: int = Field(1, ge=1, le=64, description="torch threads while ingesting and querying")

    @model_validator(mode="after")
    def _unique_clips(self) -> "VideoParams":
        names = [c.name for c in self.clips]
        if len(set(names)) != len(names):
            raise ValueError(f"clips: names must be unique, got {names}")
        return self


PEERS = ("asha", "hyperband")  # Ray Tune schedulers the `asha` stage runs (flows/asha.py); a test keeps them in step


class AshaParams(_Strict):
    peers: list[Literal[PEERS]] = Field(list(PEERS), min_length=1)  # type: ignore[valid-type]


class ReportParams(_Strict):
    title: str = "qoeflow lifecycle run"


class Params(_Strict):
    train: TrainParams
    forecast: ForecastParams = ForecastParams()
    qoe: QoEParams = QoEParams()
    allocate: AllocateParams = AllocateParams()
    compress: CompressParams | None = None
    multiexit: MultiExitParams | None = None
    bench: BenchParams = BenchParams()
    deploy: DeployParams = DeployParams()
    video: VideoParams = VideoParams()
    asha: AshaParams = AshaParams()
    report: ReportParams = ReportParams()

    @model_validator(mode="after")
    def _probe_below_max(self) -> "Params":
        probe = self.allocate.probe_epochs
        for i, job in enumerate(self.train.jobs):
            if probe >= job.max_epochs:
                raise ValueError(f"allocate.probe_epochs ({probe}) must be smaller than every job's max_epochs: "
                                 f"train.jobs.{i} ({job.name}) has max_epochs {job.max_epochs}")
        return self


def check_chosen_jobs(params: Params, sections: list[str], source: str = "params.yaml") -> None:
    """Sections that choose training jobs (`compress.jobs`, `multiexit.jobs`, `bench.caching.jobs`) must name
    jobs of `train.jobs`; checked only for the sections a DAG's stages read (a DAG without them may train
    fewer jobs)."""
    names = [j.name for j in params.train.jobs]
    for section in sections:
        chosen = getattr(params, section, None)
        key = f"{section}.jobs"
        if section == "bench":
            chosen, key = params.bench.caching, "bench.caching.jobs"
        for i, job in enumerate(getattr(chosen, "jobs", None) or []):
            if section != "train" and isinstance(job, str) and job not in names:
                raise ParamsError(f"{source}: {key}.{i}: '{job}' is not a training job "
                                  f"(train.jobs: {', '.join(names)})")


def deep_merge(base: Any, override: Any) -> Any:
    """Dicts merge key by key; anything else (lists included) is replaced."""
    if isinstance(base, Mapping) and isinstance(override, Mapping):
        merged = dict(base)
        for key, value in override.items():
            merged[key] = deep_merge(base[key], value) if key in base else copy.deepcopy(value)
        return merged
    return copy.deepcopy(override)


def apply_set(tree: dict, assignment: str, source: str = "--set") -> dict:
    """Apply one `a.b.0.c=VALUE` (VALUE parsed as YAML) to a copy of the tree."""
    if "=" not in assignment:
        raise ParamsError(f"{source}: expected KEY=VALUE, got {assignment!r}")
    key, raw = assignment.split("=", 1)
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    tree = copy.deepcopy(tree)
    node: Any = tree
    parts = key.strip().split(".")
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ParamsError(f"{source}: {key}: index '{part}' out of range (list of {len(node)})")
            if last:
                node[int(part)] = value
            node = node[int(part)]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            elif part not in node:
                raise ParamsError(f"{source}: {key}: no key '{'.'.join(parts[:i + 1])}'")
            node = node[part]
        else:
            raise ParamsError(f"{source}: {key}: '{'.'.join(parts[:i])}' is not a mapping or list")
    return tree


def read_params_file(path: str | Path) -> dict:
    """The raw params tree of a YAML file."""
    p = Path(path)
    if not p.is_file():
        raise ParamsError(f"{p}: no such params file")
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ParamsError(f"{p}: malformed YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ParamsError(f"{p}: expected a mapping of sections")
    return raw


def validate_params(tree: Mapping[str, Any], source: str = "params.yaml") -> Params:
    """Validate a raw tree; errors name the dotted key, the bad value and the rule."""
    try:
        return Params.model_validate(tree)
    except ValidationError as exc:
        lines = []
        for e in exc.errors():
            key = ".".join(str(p) for p in e["loc"])
            if e["type"] == "extra_forbidden":
                lines.append(f"{key}: unknown key")
            elif e["type"] == "missing":
                lines.append(f"{key}: required key is missing")
            elif e["type"] == "value_error" or isinstance(e.get("input"), (dict, list)):
                # a check across a section: its message names the key and the value; the section is not echoed
                message = e["msg"].removeprefix("Value error, ")
                lines.append(f"{key}: {message}" if key else message)  # a check across sections names its key
            else:
                lines.append(f"{key}: {e['msg']} (got {e.get('input')!r})")
        raise ParamsError(f"{source}: " + "; ".join(lines)) from None


def effective_tree(path: str | Path, overrides: Mapping[str, Any] | None = None, sets: list[str] | None = None) -> dict:
    """The params file merged with DAG overrides and `--set` assignments (not yet validated)."""
    tree = deep_merge(read_params_file(path), overrides or {})
    for assignment in sets or []:
        tree = apply_set(tree, assignment)
    return tree
