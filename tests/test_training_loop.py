"""The one checkpointed training loop (train, continue and asha use it): resume, damaged checkpoints, and
nothing partial left beside the checkpoint."""

from __future__ import annotations

from qoeflow.params import Job, TrainParams
from tasks.training_loop import train_to


def _setup(tmp_path):
    job = Job(name="tiny", task="digits", model="mlp", epochs=2, lr=2e-3, batch_size=32)
    settings = TrainParams.model_validate({"data": {"digits": {"limit": 60, "size": 8}}, "jobs": [job.model_dump()]})
    return job, settings, tmp_path / "checkpoints" / "tiny.pt", tmp_path / "scratch"


def test_resumes_from_its_checkpoint_and_says_so(tmp_path):
    job, settings, checkpoint, scratch = _setup(tmp_path)
    first = train_to(job, settings, 2, checkpoint, scratch, log=lambda m: None)
    assert first.trainer.epochs_done == 2 and checkpoint.exists() and not list(scratch.iterdir())
    lines: list[str] = []
    again = train_to(job, settings, 4, checkpoint, scratch, log=lines.append)
    assert again.resumed_from == 2 and not again.notes
    assert "train[tiny] resuming from epoch 2 checkpoint" in lines
    assert [r.epoch for r in again.trainer.history] == [1, 2, 3, 4]


def test_training_ends_after_the_epoch_stop_when_accepts_and_says_where_it_started(tmp_path):
    job, settings, checkpoint, scratch = _setup(tmp_path)
    started: list[int] = []
    outcome = train_to(job, settings, 5, checkpoint, scratch, log=lambda m: None, on_start=started.append,
                       stop_when=lambda record: record.epoch == 2)
    assert outcome.trainer.epochs_done == 2 and started == [0]
    again = train_to(job, settings, 5, checkpoint, scratch, log=lambda m: None, on_start=started.append)
    assert again.trainer.epochs_done == 5 and started == [0, 2]  # resumed from the epoch it stopped at


def test_a_truncated_checkpoint_is_reported_and_training_restarts(tmp_path):
    job, settings, checkpoint, scratch = _setup(tmp_path)
    train_to(job, settings, 2, checkpoint, scratch, log=lambda m: None)
    checkpoint.write_bytes(checkpoint.read_bytes()[:200])
    lines: list[str] = []
    outcome = train_to(job, settings, 3, checkpoint, scratch, log=lines.append)
    assert outcome.resumed_from == 0
    assert len(outcome.notes) == 1 and "checkpoint tiny.pt is unreadable" in outcome.notes[0]
    assert "training restarts from scratch" in outcome.notes[0] and outcome.notes[0] in lines
    assert [r.epoch for r in outcome.trainer.history] == [1, 2, 3]
    resumed = train_to(job, settings, 3, checkpoint, scratch, log=lambda m: None)  # the rewritten one is whole again
    assert resumed.resumed_from == 3 and not resumed.notes


def test_other_settings_start_afresh_without_a_warning(tmp_path):
    job, settings, checkpoint, scratch = _setup(tmp_path)
    train_to(job, settings, 2, checkpoint, scratch, log=lambda m: None)
    other = job.model_copy(update={"lr": 1e-2})
    outcome = train_to(other, settings, 2, checkpoint, scratch, log=lambda m: None)
    assert outcome.resumed_from == 0 and not outcome.notes
