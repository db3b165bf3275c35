"""D-Pruner (masking blocks, removal probabilities, physical removal, rounding) and the Torch-Pruning ℓ1
magnitude baseline at matched MACs: invariants a user relies on, and refusals of bad input."""

from __future__ import annotations

import pytest
import torch

from qoeflow.lifecycle import finetune, pruning
from qoeflow.models import arch
from qoeflow.models.digits import allcnn, mlp, resnet, vgg
from qoeflow.models.macs import count_macs, count_params

torch.set_num_threads(1)
SHAPE = (1, 16, 16)


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(96, *SHAPE, generator=g)
    y = (x[:, 0, :8].mean(dim=(1, 2)) > x[:, 0, 8:].mean(dim=(1, 2))).long()  # a learnable two-class task
    return (x[:64], y[:64]), (x[64:], y[64:])


def _model(build=vgg):
    torch.manual_seed(0)
    return build(size=16).eval()


@pytest.mark.parametrize("build", [vgg, resnet])
def test_masks_zero_exactly_k_filters_per_group(build):
    model = _model(build)
    example = torch.rand(4, *SHAPE)
    masked = pruning.MaskedNetwork(model, example, ratio=0.25)
    assert masked.names == [g.name for g in pruning.prunable_groups(model, example)]
    masked.eval()
    with torch.no_grad():
        masked(torch.rand(5, *SHAPE))
    for block in masked.blocks:
        assert block.k == round(0.25 * block.width)
        assert torch.equal((block.mask == 0).sum(dim=1), torch.full((5,), block.k))
        assert set(block.mask.unique().tolist()) <= {0.0, 1.0}
    # the blocks train: a gradient reaches them through the hard mask (straight-through)
    masked.train()
    masked(torch.rand(5, *SHAPE)).sum().backward()
    assert all(b.fc1.weight.grad is not None and b.fc1.weight.grad.abs().sum() > 0 for b in masked.blocks)
    net = masked.detach()
    assert net is model and all(not m._forward_hooks for m in net.modules())


def test_rounded_masks_and_plans_keep_multiples_of_eight():
    assert [pruning.masked_count(w, 0.2, 8) for w in (8, 16, 32, 64, 12)] == [0, 8, 8, 16, 4]
    p = torch.tensor([0.99] * 5 + [0.1] * 11)  # width 16, 5 filters over the threshold
    assert pruning.removal_plan({"g": p}, 0.95) == {"g": [0, 1, 2, 3, 4]}
    assert pruning.removal_plan({"g": p}, 0.95, round_to=8) == {}  # 11 kept → 16: the full width
    p = torch.tensor([0.97] * 9 + [0.2] * 23)  # width 32, 9 over → 23 kept → 24: the 8 most probable go
    assert pruning.removal_plan({"g": p}, 0.95, round_to=8) == {"g": list(range(8))}
    assert pruning.removal_plan({"g": torch.ones(4)}, 0.5) == {"g": [0, 1, 2]}  # one always stays


def test_d_pruner_shrinks_the_network_physically_and_it_saves_and_loads(data, tmp_path):
    train, val = data
    model = _model()
    finetune.fit(model, *train, epochs=1, batch_size=32)
    before = [p.clone() for p in model.parameters()]
    result = pruning.d_pruner(model, train, val, test=val, ratio=0.3, threshold=0.6, accuracy_budget=1.0,
                              block_epochs=1, net_epochs=1, finetune_epochs=1, max_iterations=2,
                              batch_size=32, latency_min_run_time=0.01)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # the input is left alone
    assert result.method == "d-pruner" and len(result.iterations) >= 2 and result.stopped
    original, first = result.iterations[0], result.iterations[1]
    assert first.epochs == 3 and first.accepted and set(original.latency_ms) == {1, 64}
    for name, probs in first.probabilities.items():
        assert len(probs) == original.filters[name] and all(0.0 <= p <= 1.0 for p in probs)
    for prev, it in zip(result.iterations, result.iterations[1:]):
        assert it.params < prev.params and it.macs < prev.macs
        assert it.macs == count_macs(it.model, SHAPE) and it.params == count_params(it.model)
        assert any(it.filters[g] < prev.filters[g] for g in prev.filters)
        assert all(it.filters[g] == prev.filters[g] - len(it.removed.get(g, [])) for g in prev.filters)
    best = result.best.model
    assert result.macs_ratio(result.best) > 1
    x = torch.rand(3, *SHAPE)
    arch.save_model(best, tmp_path / "pruned.pt")
    loaded, _ = arch.read_model(tmp_path / "pruned.pt")
    assert torch.allclose(loaded(x), best.eval()(x), atol=1e-5)


def test_d_pruner_on_a_resnet_with_rounding_keeps_multiples_of_eight(data, tmp_path):
    train, val = data
    result = pruning.d_pruner(_model(resnet), train, val, ratio=0.2, threshold=0.5, accuracy_budget=1.0,
                              block_epochs=1, net_epochs=0, finetune_epochs=0, max_iterations=1,
                              round_to=8, batch_size=32, latency_min_run_time=0)
    original = result.original.filters
    assert len(result.iterations) == 2
    for it in result.iterations[1:]:
        assert it.latency_ms == {}
        assert all(w % 8 == 0 or w == original[g] for g, w in it.filters.items())
        assert it.macs < result.original.macs
        arch.save_model(it.model, tmp_path / "r.pt")
        loaded, _ = arch.read_model(tmp_path / "r.pt")
        x = torch.rand(2, *SHAPE)
        assert torch.allclose(loaded(x), it.model.eval()(x), atol=1e-5)


@pytest.mark.parametrize("round_to", [None, 8])
def test_magnitude_baseline_lands_on_the_target_macs(data, round_to):
    train, val = data
    model = _model(allcnn)
    macs = count_macs(model, SHAPE)
    target = int(macs / 2.5)
    result = pruning.magnitude_baseline(model, train, val, target_macs=target, epochs=1, round_to=round_to,
                                        batch_size=32, latency_min_run_time=0)
    pruned = result.iterations[1]
    assert result.method == "magnitude" and pruned.epochs == 1
    assert pruned.macs == count_macs(pruned.model, SHAPE) < macs
    if round_to is None:
        assert abs(pruned.macs - target) / target <= 0.03
    else:
        assert all(w % 8 == 0 for w in pruned.filters.values())
    assert pruned.filters.keys() == result.original.filters.keys()  # the classifier keeps its 10 outputs
    assert pruned.model(torch.rand(2, *SHAPE)).shape == (2, 10)


def test_bad_input_is_refused(data):
    train, val = data
    for threshold in (0, 1, 1.5, -0.1):
        with pytest.raises(ValueError, match="threshold"):
            pruning.d_pruner(_model(), train, val, threshold=threshold)
    with pytest.raises(ValueError, match="accuracy_budget"):
        pruning.d_pruner(_model(), train, val, accuracy_budget=-0.01)
    with pytest.raises(ValueError, match="ratio"):
        pruning.d_pruner(_model(), train, val, ratio=1.0)
    with pytest.raises(ValueError, match="round_to"):
        pruning.d_pruner(_model(), train, val, round_to=0)
    with pytest.raises(ValueError, match="no convolution"):
        pruning.d_pruner(_model(mlp), train, val, latency_min_run_time=0)
    with pytest.raises(ValueError, match="no convolution"):
        pruning.magnitude_baseline(_model(mlp), train, val, target_macs=1000, epochs=0, latency_min_run_time=0)
    with pytest.raises(ValueError, match="target_macs"):
        pruning.magnitude_baseline(_model(), train, val, target_macs=0, epochs=0, latency_min_run_time=0)
