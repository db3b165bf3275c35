"""The one checkpointed training loop, used by the `train`, `continue` and `asha` stages.

A job trains epoch by epoch and checkpoints after every epoch (atomically: the file is written outside
data/ and renamed into place). It resumes from its checkpoint when the checkpoint was made with the
same settings and data (a fingerprint guards this), or else from `resume_from` (the `continue` stage
resumes from `train`'s checkpoints). A damaged checkpoint is reported and training restarts from
scratch. A job whose loss turns NaN/inf stops as diverged.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import uuid
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from qoeflow.families import metrics_of
from qoeflow.params import Job, TrainParams


@lru_cache(maxsize=4)
def _split(task: str, data_json: str):
    from qoeflow.data import load_split

    return load_split(task, **json.loads(data_json))  # catalog-ok: a cache key, not a file


def data_settings(settings: TrainParams, task: str) -> dict:
    """The data settings of a job's family, as a plain dict."""
    return getattr(settings.data, task).model_dump()


def job_split(settings: TrainParams, task: str):
    """The train/val/test split of a family under these settings (built once per process)."""
    return _split(task, json.dumps(data_settings(settings, task), sort_keys=True))


def fingerprint(job: Job, data: dict) -> str:
    """What a checkpoint must match to be resumed: the job's settings (but its epochs) and its data."""
    settings = job.model_dump(exclude={"epochs", "max_epochs"})
    return hashlib.sha256(json.dumps([settings, json.dumps(data, sort_keys=True)], sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class TrainedJob:
    """The outcome of `train_to`: the trainer (model, history), where it diverged, and what went wrong on the way."""

    trainer: Any
    diverged_at: int | None
    resumed_from: int = 0
    notes: list[str] = field(default_factory=list)


def _read_checkpoint(path: Path, want: str, epochs: int, notes: list[str], name: str) -> dict | None:
    import torch

    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or "trainer" not in state:
            raise ValueError("no trainer state in it")
    except Exception as exc:  # truncated, corrupt, or not ours
        notes.append(f"{name}: checkpoint {path.name} is unreadable ({type(exc).__name__}: {str(exc)[:120]}); "
                     f"training restarts from scratch")
        return None
    if state.get("fingerprint") != want or state.get("epochs_done", 0) > epochs:
        return None
    return state


def _write_checkpoint(path: Path, state: dict, scratch: Path) -> None:
    import torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    scratch.mkdir(parents=True, exist_ok=True)
    tmp = scratch / f"{uuid.uuid4().hex[:8]}-{path.name}"
    tmp.write_bytes(buffer.getvalue())
    path.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, path)


def train_to(
    job: Job,
    settings: TrainParams,
    epochs: int,
    checkpoint: Path,
    scratch: Path,
    *,
    resume_from: Path | None = None,
    log: Callable[[str], None] = print,
    on_start: Callable[[int], None] | None = None,
    on_epoch: Callable[[Any, Any], None] | None = None,
    stop_when: Callable[[Any], bool] | None = None,
    label: str = "train",
) -> TrainedJob:
    """Train `job` to `epochs`, checkpointing to `checkpoint` after every epoch (temporaries in `scratch`).

    `on_start(epochs_done)` runs once training is about to start (after any resume); `on_epoch(record,
    trainer)` after each epoch's checkpoint is written; training ends early after an epoch whose record
    `stop_when(record)` accepts."""
    import torch

    from qoeflow.lifecycle.training import Diverged, JobSpec, TrainingJob

    data = data_settings(settings, job.task)
    torch.set_num_threads(settings.threads_per_job)
    split = job_split(settings, job.task)
    trainer = TrainingJob(JobSpec(**job.model_dump(exclude={"max_epochs"})), split, threads=settings.threads_per_job)
    want = fingerprint(job, data)
    name = f"{label}[{job.name}]"
    outcome = TrainedJob(trainer, None)
    state = _read_checkpoint(checkpoint, want, epochs, outcome.notes, name)
    if state is None and resume_from is not None:
        state = _read_checkpoint(resume_from, want, epochs, outcome.notes, name)
    for message in outcome.notes:
        log(message)
    if state is not None:
        trainer.load_state_dict(state["trainer"])
        outcome.diverged_at = state.get("diverged_at")
        outcome.resumed_from = trainer.epochs_done
        if trainer.epochs_done:
            log(f"{name} resuming from epoch {trainer.epochs_done} checkpoint")

    def save() -> None:
        _write_checkpoint(checkpoint, {"fingerprint": want, "epochs_done": trainer.epochs_done,
                                       "diverged_at": outcome.diverged_at, "trainer": trainer.state_dict()}, scratch)

    metric = metrics_of(job.task)[0]
    if on_start is not None:
        on_start(trainer.epochs_done)
    while outcome.diverged_at is None and trainer.epochs_done < epochs:
        try:
            record = trainer.train_epoch()
        except Diverged as exc:
            outcome.diverged_at = exc.epoch
            log(f"{name} DIVERGED at epoch {exc.epoch} (loss {exc.value}); job stopped, others carry on")
            save()
            break
        log(f"{name} epoch {record.epoch}/{epochs} train_loss {record.train_loss:.4f} val_loss {record.val_loss:.4f} "
            f"{metric} {record.metrics[metric]:.4f} ({record.epoch_seconds:.2f}s)")
        save()
        if on_epoch is not None:
            on_epoch(record, trainer)
        if stop_when is not None and stop_when(record):
            break
    if not checkpoint.exists():  # resumed from elsewhere with nothing left to train: keep a checkpoint of our own
        save()
    return outcome
