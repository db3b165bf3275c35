"""Training jobs: learning, resumability, divergence, metrics and latency."""

import io
import math
import pickle

import pytest
import torch

from qoeflow.data.crowd import crowd_split
from qoeflow.data.digits import digits_split
from qoeflow.lifecycle.training import Diverged, JobSpec, TrainingJob, untrained_validation
from qoeflow.lifecycle.training import test_latency as latency


@pytest.fixture(scope="module")
def digits():
    return digits_split(limit=400)


@pytest.fixture(scope="module")
def crowd():
    return crowd_split(n_train=32, n_val=8, n_test=8, size=32)


def test_digits_training_learns(digits):
    job = TrainingJob(JobSpec("d", "digits", "mlp", epochs=4, lr=2e-3, batch_size=32), digits, threads=1, device="cpu")
    seen = []
    records = job.run(callback=seen.append)
    assert seen == records == job.history and job.epochs_done == 4
    assert [r.epoch for r in records] == [1, 2, 3, 4]
    assert records[-1].val_loss < 0.7 * records[0].val_loss
    assert records[-1].train_loss < records[0].train_loss
    last = records[-1]
    assert last.metrics["accuracy"] > 0.6 and last.metrics["error"] == pytest.approx(1 - last.metrics["accuracy"])
    assert all(r.epoch_seconds > 0 for r in records)
    assert job.evaluate(digits.x_val, digits.y_val) == last.metrics
    assert set(job.evaluate(digits.x_test, digits.y_test)) == {"accuracy", "error"}


def test_crowd_epoch_metrics(crowd):
    job = TrainingJob(JobSpec("c", "crowd", "mcnn", epochs=1, lr=1e-3, batch_size=8), crowd, device="cpu")
    record = job.train_epoch()
    assert set(record.metrics) == {"mae", "mse"}
    # count error: mse is the mean squared error (no root), so mse >= mae**2
    assert record.metrics["mse"] >= record.metrics["mae"] ** 2 > 0
    with torch.no_grad():
        error = job.model.eval()(crowd.x_test).sum(dim=(1, 2, 3)) - crowd.counts["test"]
    assert job.evaluate(crowd.x_test, crowd.y_test)["mae"] == pytest.approx(error.abs().mean().item(), rel=1e-5)


def _spec(**kw):
    return JobSpec(**{"name": "r", "task": "digits", "model": "vgg", "epochs": 3, "batch_size": 32, "lr": 1e-3, **kw})


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_resume_equals_uninterrupted(optimizer):
    split = digits_split(limit=160, size=16)
    spec = _spec(optimizer=optimizer, lr=1e-3 if optimizer == "adam" else 0.05)
    torch.manual_seed(99)
    straight = TrainingJob(spec, split, device="cpu")
    straight.run(3)

    first = TrainingJob(spec, split, device="cpu")
    first.run(2)
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    torch.manual_seed(1234)  # as in a fresh process: the global RNG must not matter
    resumed = TrainingJob(spec, split, device="cpu")
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    assert resumed.epochs_done == 2 and len(resumed.history) == 2
    resumed.train_epoch()

    for a, b in zip(straight.history, resumed.history):
        assert a.epoch == b.epoch
        assert a.train_loss == pytest.approx(b.train_loss, abs=1e-6)
        assert a.val_loss == pytest.approx(b.val_loss, abs=1e-6)
        assert a.metrics == pytest.approx(b.metrics, abs=1e-6)
    for pa, pb in zip(straight.model.state_dict().values(), resumed.model.state_dict().values()):
        torch.testing.assert_close(pa, pb, atol=1e-6, rtol=1e-5)


def test_same_seed_same_run_other_seed_differs():
    split = digits_split(limit=100, size=16)
    runs = []
    for global_seed, seed in ((0, 0), (1, 0), (0, 1)):
        torch.manual_seed(global_seed)  # the job's own seed decides, not torch's global RNG
        runs.append(TrainingJob(_spec(model="mlp", seed=seed), split, device="cpu").run(1)[0])
    assert runs[0].train_loss == runs[1].train_loss != runs[2].train_loss


def test_state_of_another_model_is_refused(digits):
    state = TrainingJob(_spec(model="mlp"), digits, device="cpu").state_dict()
    with pytest.raises(ValueError, match="digits/mlp"):
        TrainingJob(_spec(model="vgg"), digits, device="cpu").load_state_dict(state)


@pytest.mark.parametrize("task,model", [("digits", "mlp"), ("crowd", "mcnn")])
def test_huge_learning_rate_diverges(task, model, digits, crowd):
    split = digits if task == "digits" else crowd
    spec = JobSpec("boom", task, model, epochs=3, optimizer="sgd", lr=1e6, batch_size=16)
    job = TrainingJob(spec, split, device="cpu")
    with pytest.raises(Diverged) as info:
        job.run()
    assert info.value.epoch <= 3 and not math.isfinite(info.value.value)
    assert job.epochs_done == info.value.epoch - 1 == len(job.history)
    copy = pickle.loads(pickle.dumps(info.value))  # crosses process boundaries (Ray) intact
    assert (copy.epoch, str(copy)) == (info.value.epoch, str(info.value))


def test_bad_specs_refused(digits):
    with pytest.raises(ValueError, match="adam, sgd"):
        JobSpec("x", "digits", "mlp", epochs=1, optimizer="rmsprop")
    with pytest.raises(ValueError, match="crowd job"):
        TrainingJob(JobSpec("x", "crowd", "mcnn", epochs=1), digits)
    with pytest.raises(ValueError, match="does not match"):
        TrainingJob(JobSpec("x", "crowd", "mcnn", epochs=1), crowd_split(n_train=2, n_val=1, n_test=1, size=32,
                                                                          density_stride=2))


def test_latency_single_images_in_eval_mode():
    calls = []
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Dropout(0.5))
    model.register_forward_hook(lambda m, i, o: calls.append((i[0].shape[0], m.training, torch.is_grad_enabled())))
    seconds = latency(model, torch.rand(20, 8), repeats=3, n_images=4)
    assert 0 < seconds < 1
    assert len(calls) == 4 * (1 + 3) and set(calls) == {(1, False, False)}
    assert model.training



def test_epoch_0_is_the_seeded_model_before_any_training(digits):
    spec = JobSpec("d", "digits", "mlp", epochs=1, lr=2e-3, batch_size=32, seed=3)
    start = untrained_validation(spec, digits, device="cpu")
    assert start == untrained_validation(spec, digits, device="cpu")  # the seed fixes the initial weights
    assert set(start) == {"val_loss", "accuracy", "error"} and start["error"] > 0.6  # about chance on 10 classes
    job = TrainingJob(spec, digits, threads=1, device="cpu")
    assert job.evaluate(digits.x_val, digits.y_val)["error"] == start["error"]
    record = job.train_epoch()
    assert record.val_loss < start["val_loss"] and record.metrics["error"] < start["error"]
