"""Multi-exit networks (qoeflow/lifecycle/multiexit.py): the last exit is the base network, prefix batching
and early exit agree with running exits one by one, calibrated thresholds hold on their data, the model
is data (arch.py), and bad input is refused by name."""

import math

import pytest
import torch
import torch.nn.functional as F

from qoeflow.lifecycle import finetune
from qoeflow.lifecycle.multiexit import (
    MultiExitNet, all_exit_logits, calibrate_thresholds, early_exit_report, exit_decisions, exit_loss, exit_macs,
    fit_multi_exit, focal_loss, ideal_speedup, path_macs, route, single_exit, training_speedup)
from qoeflow.models.arch import describe, read_model, save_model
from qoeflow.models.digits import resnet, vgg
from qoeflow.models.macs import count_macs

torch.set_num_threads(1)
DEPTHS = [0, 1, 2, 3]


@pytest.fixture(scope="module")
def data():
    from qoeflow.data import load_split

    split = load_split("digits", size=32, limit=400)
    return split


@pytest.fixture(scope="module")
def base(data):
    torch.manual_seed(0)
    model = resnet()
    finetune.fit(model, data.x_train, data.y_train, epochs=2, lr=3e-3, seed=0)
    return model.eval()


@pytest.fixture(scope="module")
def trained(base, data):
    torch.manual_seed(1)
    model = MultiExitNet(base, DEPTHS)
    fit_multi_exit(model, data.x_train, data.y_train, weights=[1, 1, 1, 1], epochs=1, lr=1e-3, seed=0)
    return model.eval()


@pytest.mark.parametrize("aggregate", [False, True])
def test_last_exit_is_the_base_network(base, data, aggregate):
    torch.manual_seed(0)
    model = MultiExitNet(base, DEPTHS, aggregate=aggregate).eval()
    x = data.x_val[:50]
    with torch.no_grad():
        outs = model(x)
        assert len(outs) == 4 and all(o.shape == (50, 10) for o in outs)
        assert torch.allclose(outs[-1], base(x), atol=1e-6)
        assert torch.allclose(single_exit(base, 3).eval()(x)[0], base(x), atol=1e-6)
    assert count_macs(single_exit(base, 3), (1, 32, 32)) == count_macs(base, (1, 32, 32))
    assert exit_macs(MultiExitNet(base, DEPTHS))[-1] == count_macs(base, (1, 32, 32))
    # the base itself is left untouched by building and training
    before = {k: v.clone() for k, v in base.state_dict().items()}
    fit_multi_exit(model, x, data.y_val[:50], weights=[1, 1, 1, 1], epochs=1)
    assert all(torch.equal(before[k], v) for k, v in base.state_dict().items())


def test_prefix_batching_equals_each_exit_alone(trained, data):
    x = data.x_val[:40]
    with torch.no_grad():
        outs = trained(x)
        for e in range(trained.n_exits):
            assert torch.allclose(outs[e], trained.exit_logits(x, e), atol=1e-5)


def test_aggregated_prefix_batching_equals_each_exit_alone(base, data):
    model = MultiExitNet(base, [0, 2, 3], aggregate=True)
    fit_multi_exit(model, data.x_train[:64], data.y_train[:64], weights=[1, 1, 1], epochs=1)
    x = data.x_val[:20]
    with torch.no_grad():
        outs = model.eval()(x)
        for e in range(3):
            assert torch.allclose(outs[e], model.exit_logits(x, e), atol=1e-5)


def test_calibrated_thresholds_meet_target_on_their_data(trained, data):
    logits = all_exit_logits(trained, data.x_val)
    for target in (0.9, 0.99, 1.0):
        thresholds = calibrate_thresholds(logits, data.y_val, target)
        assert len(thresholds) == 4
        pred, where = route(logits, thresholds)
        for e in range(3):  # the early exits: the last one answers whatever reaches it
            exited = where == e
            if exited.any():
                assert float((pred[exited] == data.y_val[exited]).double().mean()) >= target - 1e-12
    # the model's own early exit follows the same route
    thresholds = calibrate_thresholds(logits, data.y_val, 0.95)
    with torch.no_grad():
        out, where_model = trained.early_exit(data.x_val, thresholds)
    pred, where = route(logits, thresholds)
    assert torch.equal(where_model, where)
    assert torch.equal(out.argmax(1), pred)


def test_threshold_is_lowest_that_holds():
    # confidences 0.9 (right), 0.8 (right), 0.7 (wrong), 0.6 (right)
    probs = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4]])
    logits = [probs.log(), probs.log()]
    y = torch.tensor([0, 0, 1, 0])

    def exiting(target, labels=y):
        return route(logits, calibrate_thresholds(logits, labels, target))[1].eq(0).tolist()

    assert exiting(1.0) == [True, True, False, False]  # the top two, not one more
    assert exiting(0.75) == [True, True, True, True]  # 3 right of 4
    assert exiting(0.8) == [True, True, False, False]  # 3 of 4 misses it, 2 of 2 holds
    assert exiting(1.0, torch.tensor([1, 1, 0, 1])) == [False] * 4  # nothing holds: never exits
    assert calibrate_thresholds(logits, torch.tensor([1, 1, 0, 1]), 1.0)[0] == 1.0


def test_thresholds_of_one_never_exit_early(trained, base, data):
    x = data.x_val[:30]
    with torch.no_grad():
        full = trained(x)[-1]
        out, where = trained.early_exit(x, [1.0] * 4)
        assert torch.equal(where, torch.full((30,), 3))
        assert torch.equal(out.argmax(1), full.argmax(1))
        for i in range(5):
            logits, e = trained.early_exit_one(x[i:i + 1], [1.0, 1.5, math.inf, 1.0])
            assert e == 3 and torch.allclose(logits, full[i:i + 1], atol=1e-5)
        fresh = MultiExitNet(base, DEPTHS).eval()
        out, _ = fresh.early_exit(x, [1.0] * 4)
        assert torch.equal(out.argmax(1), base(x).argmax(1))
        # thresholds below any confidence exit everything at the first exit
        out, where = trained.early_exit(x, [0.0] * 4)
        assert torch.equal(where, torch.zeros(30, dtype=torch.long))
        assert torch.allclose(out, trained(x)[0], atol=1e-5)


def test_early_exit_paths_cost_less(trained, base, data):
    macs = path_macs(trained)
    assert macs == sorted(macs) and macs[0] < count_macs(base, (1, 32, 32)) / 10
    report = early_exit_report(trained, base, data.x_val[:40], data.y_val[:40], [0.0, 1, 1, 1],
                               min_run_time=0.01)
    assert report.exit_shares == (1.0, 0.0, 0.0, 0.0)
    assert report.mean_macs == macs[0] and report.macs_reduction > 10


def test_focal_loss_with_gamma_zero_is_cross_entropy():
    torch.manual_seed(0)
    logits = torch.randn(20, 10, requires_grad=True)
    y = torch.randint(0, 10, (20,))
    assert torch.allclose(focal_loss(logits, y, 0.0), F.cross_entropy(logits, y), atol=1e-6)
    grad_fl, = torch.autograd.grad(focal_loss(logits, y, 0.0), logits)
    grad_ce, = torch.autograd.grad(F.cross_entropy(logits, y), logits)
    assert torch.allclose(grad_fl, grad_ce, atol=1e-7)
    assert focal_loss(logits, y, 2.0) < F.cross_entropy(logits, y)  # down-weighted


def test_weighted_loss_is_the_weighted_sum(trained, data):
    x, y = data.x_val[:16], data.y_val[:16]
    with torch.no_grad():
        outs = trained(x)
        value = exit_loss(trained, [0.5, 0, 1, 2], gamma=[0, 0, 2, 0])(trained, x, y)
        expected = 0.5 * F.cross_entropy(outs[0], y) + focal_loss(outs[2], y, 2) + 2 * F.cross_entropy(outs[3], y)
    assert torch.allclose(value, expected, atol=1e-5)


@pytest.mark.parametrize("aggregate", [False, True])
def test_round_trip_through_arch(tmp_path, trained, base, aggregate):
    model = trained if not aggregate else MultiExitNet(base, [1, 2, 3], aggregate=True)
    if aggregate:
        with torch.no_grad():
            for m in model.mixers:
                m.mix.weight.normal_()  # not the identity start
    path = tmp_path / "mxn.pt"
    save_model(model, path, {"depths": list(model.depths)})
    torch.load(path, weights_only=True)
    again, meta = read_model(path)
    assert describe(again) == describe(model)
    assert again.n_exits == model.n_exits and again.aggregate == aggregate
    x = torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        for a, b in zip(model.eval()(x), again(x)):
            assert torch.allclose(a, b, atol=1e-6)
        assert torch.equal(model.early_exit(x, [0.5] * model.n_exits)[1], again.early_exit(x, [0.5] * model.n_exits)[1])


def test_other_zoo_backbones():
    torch.manual_seed(0)
    base = vgg().eval()
    model = MultiExitNet(base, [2, 5, 6]).eval()  # after each max-pool block and the last conv
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x)[-1], base(x), atol=1e-6)


def test_decisions_and_speedups():
    logits = [torch.tensor([[3.0, 0.0], [0.0, 0.1], [0.0, 3.0]])] * 2
    y = torch.tensor([0, 0, 0])
    d = exit_decisions(logits, y, 0.9)[0]
    assert (d.exited, d.recall, d.precision) == (2, 2 / 3, 0.5)
    assert math.isnan(exit_decisions(logits, y, 1.0)[0].precision)
    s = training_speedup(2.0, [1.0, 2.0, 3.0], ideal=4.0)
    assert s.measured == 3.0 and s.share_of_ideal == 0.75
    base = resnet()
    singles = [single_exit(base, d) for d in DEPTHS]
    ideal = ideal_speedup(singles, base)
    assert 1.5 < ideal < 4


@pytest.mark.parametrize("depths,match", [
    ([0, 1, 4], r"depths \[4\] do not exist.*\[0, 3\]"),
    ([-1, 2], r"depths \[-1\] do not exist"),
    ([1, 1, 3], "must not repeat"),
    ([2, 1, 3], "sorted"),
    ([], "at least one"),
    ([0.5, 3], "integers"),
])
def test_bad_depths(base, depths, match):
    with pytest.raises(ValueError, match=match):
        MultiExitNet(base, depths)


def test_bad_weights_targets_thresholds(trained, data):
    x, y = data.x_val[:8], data.y_val[:8]
    with pytest.raises(ValueError, match=r"one entry per exit \(4\), got 3"):
        fit_multi_exit(trained, x, y, weights=[1, 1, 1], epochs=1)
    with pytest.raises(ValueError, match="non-negative"):
        exit_loss(trained, [1, -1, 1, 1])
    with pytest.raises(ValueError, match="not all zero"):
        exit_loss(trained, [0, 0, 0, 0])
    with pytest.raises(ValueError, match="gamma"):
        exit_loss(trained, [1, 1, 1, 1], gamma=-1)
    logits = all_exit_logits(trained, x)
    for bad in (0.0, 1.5, -0.2):
        with pytest.raises(ValueError, match=r"target_precision must lie in \(0, 1\]"):
            calibrate_thresholds(logits, y, bad)
    with pytest.raises(ValueError, match="thresholds must be 4 numbers"):
        trained.early_exit(x, [0.5, 0.5])
    with pytest.raises(ValueError, match="base must be an nn.Sequential"):
        MultiExitNet(trained, [0])
    with pytest.raises(ValueError, match="head_pool must be one of"):
        MultiExitNet(resnet(), [3], head_pool="median")
