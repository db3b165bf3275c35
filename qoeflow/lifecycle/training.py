"""Training jobs (paper 000 §II-A): epoch-by-epoch training with per-epoch curves, resumable state,
divergence detection, task metrics, and single-image test latency.

The task family (qoeflow.families) gives the kind of task. Losses: cross-entropy for classification
(digits); for density maps (crowd) the squared error of the density map summed over its
pixels and averaged over images (MCNN's Euclidean loss, O(1) for these maps). Crowd metrics use the
per-image count (the map's sum): ``mae`` = mean |error|, ``mse`` = mean error² (no square root).

Density jobs only (benchmarks/results/crowd.md): training images are mirrored at random (left-right and
top-bottom, maps with them), and after each epoch every BatchNorm's running statistics are recomputed over
the train images with the epoch's final weights ("precise BN"). The count is a sum over the whole map, so
the small lag of BatchNorm's moving averages behind moving weights shifted eval-mode counts by up to ±30
heads from one epoch to the next; recomputed, eval counts track train-mode ones.

Determinism: the model is initialised from ``seed``; each epoch runs under a torch seed derived from
(``seed``, epoch), so a resumed job reproduces an uninterrupted one without saving RNG states.
"""

from __future__ import annotations

import copy
import math
import statistics
import time
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from qoeflow.data import Split
from qoeflow.families import FAMILIES
from qoeflow.models import build_model

OPTIMIZERS = ("adam", "sgd")
KINDS = ("classification", "density")
EVAL_BATCH = 256
RECALIBRATION_BATCH = 64  # density jobs re-estimate BatchNorm statistics in batches this size (one of 256 ran
                          # slower on CPU than four of 64; half the train images made test counts worse)


@dataclass
class JobSpec:
    """One training job: which model on which task, for how many epochs, with which optimiser."""

    name: str
    task: str
    model: str
    epochs: int
    batch_size: int = 64
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.task not in FAMILIES:
            raise ValueError(f"job '{self.name}': unknown task '{self.task}' (allowed: {', '.join(FAMILIES)})")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"job '{self.name}': unknown optimizer '{self.optimizer}' "
                             f"(allowed: {', '.join(OPTIMIZERS)})")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError(f"job '{self.name}': epochs, batch_size and lr must be positive")


@dataclass
class EpochRecord:
    """One trained epoch: 1-based epoch, mean train loss, val loss, val metrics, wall seconds (incl. eval)."""

    epoch: int
    train_loss: float
    val_loss: float
    metrics: dict[str, float] = field(default_factory=dict)
    epoch_seconds: float = 0.0


class Diverged(RuntimeError):
    """The loss became NaN or infinite during ``epoch``; the epoch is not recorded."""

    def __init__(self, epoch: int, value: float, where: str = "train"):
        super().__init__(epoch, value, where)  # args re-create the exception when unpickled (Ray)
        self.epoch, self.value, self.where = epoch, value, where

    def __str__(self) -> str:
        return f"{self.where} loss diverged to {self.value} in epoch {self.epoch}"


def _seed_for(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7_919) % (2**63 - 1)


class TrainingJob:
    """A model of ``spec`` trained on ``split``, one epoch at a time. ``threads`` sets torch's CPU threads
    (process-wide); ``device`` defaults to CUDA when available."""

    def __init__(self, spec: JobSpec, split: Split, threads: int | None = None, device: str | None = None):
        if split.task != spec.task:
            raise ValueError(f"job '{spec.name}' is a {spec.task} job but got a {split.task} split")
        if threads is not None:
            torch.set_num_threads(threads)
        self.spec, self.split = spec, split
        self.kind = FAMILIES[spec.task].kind
        if self.kind not in KINDS:
            raise ValueError(f"task family '{spec.task}' has kind '{self.kind}' (training knows {', '.join(KINDS)})")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(spec.seed)
            self.model = build_model(spec.task, spec.model, size=split.x_train.shape[-1]).to(self.device)
        params = self.model.parameters()
        if spec.optimizer == "adam":
            self.optimizer = torch.optim.Adam(params, lr=spec.lr, weight_decay=spec.weight_decay)
        else:
            self.optimizer = torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum,
                                             weight_decay=spec.weight_decay)
        self.epochs_done = 0
        self.history: list[EpochRecord] = []
        self._check_shapes()

    def _check_shapes(self) -> None:
        self.model.eval()
        with torch.no_grad():
            out = self.model(self.split.x_train[:1].to(self.device))
        self.model.train()
        want = (1, 10) if self.kind == "classification" else tuple(self.split.y_train[:1].shape)
        if tuple(out.shape) != want:
            raise ValueError(f"job '{self.spec.name}': model output {tuple(out.shape)} does not match targets {want} "
                             f"(crowd models output size/4; use density_stride=4)")

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The task's training loss of a batch."""
        if self.kind == "classification":
            return F.cross_entropy(output, target)
        return (output - target).pow(2).sum(dim=(1, 2, 3)).mean()

    def train_epoch(self) -> EpochRecord:
        """Train one epoch over the shuffled train part, then evaluate on val; raise ``Diverged`` on NaN/inf."""
        epoch = self.epochs_done + 1
        start = time.perf_counter()
        x, y = self.split.x_train, self.split.y_train
        total, seen = 0.0, 0
        self.model.train()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_seed_for(self.spec.seed, epoch))
            order = torch.randperm(len(x))
            flips = self._flips(len(x))
            for i in range(0, len(x), self.spec.batch_size):
                idx = order[i:i + self.spec.batch_size]
                xb, yb = x[idx].to(self.device), y[idx].to(self.device)
                if flips is not None:
                    xb, yb = _flip(xb, yb, flips[idx].to(self.device))
                loss = self.loss(self.model(xb), yb)
                value = loss.item()
                if not math.isfinite(value):
                    raise Diverged(epoch, value)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                total += value * len(idx)
                seen += len(idx)
        if self.kind == "density":
            recalibrate_batchnorm(self.model, self.split.x_train, self.device)
        val_loss, metrics = self._evaluate(self.split.x_val, self.split.y_val)
        if not math.isfinite(val_loss):
            raise Diverged(epoch, val_loss, where="val")
        record = EpochRecord(epoch, total / seen, val_loss, metrics, time.perf_counter() - start)
        self.epochs_done = epoch
        self.history.append(record)
        return record

    def _flips(self, n: int) -> torch.Tensor | None:
        """Density maps only: per training image, whether to mirror it left-right and top-bottom ((n, 2) bool),
        drawn from the epoch's seeded stream after the shuffle; None for classification (digits do not mirror)."""
        if self.kind != "density":
            return None
        return torch.rand(n, 2) < 0.5

    def run(self, epochs: int | None = None, callback=None) -> list[EpochRecord]:
        """Train until ``epochs`` (default ``spec.epochs``) are done; ``callback(record)`` after each epoch."""
        target = self.spec.epochs if epochs is None else epochs
        records = []
        while self.epochs_done < target:
            records.append(self.train_epoch())
            if callback is not None:
                callback(records[-1])
        return records

    @torch.no_grad()
    def _evaluate(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, dict[str, float]]:
        was_training = self.model.training
        self.model.eval()
        loss_sum, outputs = 0.0, []
        for i in range(0, len(x), EVAL_BATCH):
            out = self.model(x[i:i + EVAL_BATCH].to(self.device))
            loss_sum += self.loss(out, y[i:i + EVAL_BATCH].to(self.device)).item() * len(out)
            outputs.append(out.cpu())
        self.model.train(was_training)
        out = torch.cat(outputs)
        if self.kind == "classification":
            accuracy = (out.argmax(dim=1) == y).double().mean().item()
            metrics = {"accuracy": accuracy, "error": 1.0 - accuracy}
        else:
            error = out.sum(dim=(1, 2, 3)).double() - y.sum(dim=(1, 2, 3)).double()
            metrics = {"mae": error.abs().mean().item(), "mse": error.pow(2).mean().item()}
        return loss_sum / len(x), metrics

    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """The family's metrics (classification: accuracy, error; density: count mae, mse) on ``(x, y)``."""
        return self._evaluate(x, y)[1]

    def state_dict(self) -> dict:
        """Everything needed to resume (tensors and plain Python values only: loads with weights_only=True)."""
        return copy.deepcopy({
            "spec": asdict(self.spec),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epochs_done": self.epochs_done,
            "history": [asdict(r) for r in self.history],
        })

    def load_state_dict(self, state: dict) -> None:
        """Restore a ``state_dict()``; its job must have the same task and model."""
        saved = state["spec"]
        if (saved["task"], saved["model"]) != (self.spec.task, self.spec.model):
            raise ValueError(f"state of a {saved['task']}/{saved['model']} job cannot be loaded into "
                             f"{self.spec.task}/{self.spec.model}")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epochs_done = int(state["epochs_done"])
        self.history = [EpochRecord(**r) for r in state["history"]]


def untrained_validation(spec: JobSpec, split: Split, device: str | None = None) -> dict[str, float]:
    """Validation loss and metrics of the job's model as its seed initialises it: where its learning curve
    starts (epoch 0), what a one-epoch probe is forecast from besides its first epoch."""
    job = TrainingJob(spec, split, device=device)
    val_loss, metrics = job._evaluate(split.x_val, split.y_val)
    return {"val_loss": float(val_loss), **{k: float(v) for k, v in metrics.items()}}


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, x: torch.Tensor, device: torch.device) -> None:
    """Recompute every BatchNorm's running statistics of `model` over the images `x` with its current weights
    ("precise BN"), in place of the moving averages gathered while the weights moved."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    was_training = model.training
    model.train()
    try:
        for i in range(0, len(x), RECALIBRATION_BATCH):
            model(x[i:i + RECALIBRATION_BATCH].to(device))
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.train(was_training)


def _flip(x: torch.Tensor, y: torch.Tensor, flips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mirror images and their density maps together: ``flips[:, 0]`` left-right, ``flips[:, 1]`` top-bottom."""
    for column, dim in ((0, -1), (1, -2)):
        mask = flips[:, column].view(-1, 1, 1, 1)
        x, y = torch.where(mask, x.flip(dim), x), torch.where(mask, y.flip(dim), y)
    return x, y


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def test_latency(model: nn.Module, x: torch.Tensor, repeats: int = 5, n_images: int = 16) -> float:
    """Seconds per test image (batch of 1, eval mode, no grad): median over ``repeats`` passes over
    the first ``n_images`` of ``x``, after one warm-up pass."""
    from qoeflow.models.latency import steady_allocator

    if repeats < 1 or n_images < 1 or len(x) == 0:
        raise ValueError("repeats, n_images and len(x) must be positive")
    steady_allocator()
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    images = x[:n_images].to(device)
    was_training = model.training
    model.eval()
    try:
        for image in images:
            model(image[None])
        _sync(device)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            for image in images:
                model(image[None])
            _sync(device)
            times.append((time.perf_counter() - start) / len(images))
    finally:
        model.train(was_training)
    return statistics.median(times)


def estimate_epoch_seconds(job: TrainingJob, steps: int = 3) -> float:
    """Seconds one epoch of `job` would take: `steps` timed training steps (after one untimed) on a copy of
    its model and optimiser, scaled to the epoch's batches, plus one timed validation pass (and, for density
    jobs, the copy's BatchNorm recalibration). The job itself is left untouched."""
    model, optimizer = copy.deepcopy(job.model), copy.deepcopy(job.optimizer)
    optimizer.param_groups[0]["params"] = list(model.parameters())  # the copy steps the copied model
    optimizer.state.clear()
    x, y, batch = job.split.x_train, job.split.y_train, job.spec.batch_size
    times = []
    model.train()
    for i in range(steps + 1):
        start = time.perf_counter()
        xb, yb = x[:batch].to(job.device), y[:batch].to(job.device)
        loss = job.loss(model(xb), yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        _sync(job.device)
        times.append(time.perf_counter() - start)
    batches = math.ceil(len(x) / batch)
    start = time.perf_counter()
    if job.kind == "density":  # what a density epoch does after its steps, on the copy
        recalibrate_batchnorm(model, x, job.device)
    with torch.no_grad():
        job.evaluate(job.split.x_val, job.split.y_val)  # evaluation changes no weight
    return statistics.median(times[1:]) * batches + (time.perf_counter() - start)
