"""DMS (qoeflow/lifecycle/dms.py): the ℓ1 reorder keeps the function, run-time scaling slices views of a
model it never changes (equal to physically removing the channels), levels are thread-safe arguments,
Eq. (2) equals the counted MACs, the table's entries save equal MACs in order of sensitivity."""

from __future__ import annotations

import copy
import math
import threading

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from qoeflow.lifecycle import channels, dms
from qoeflow.models import digits
from qoeflow.models.arch import describe, read_model, save_model
from qoeflow.models.macs import count_macs

torch.set_num_threads(1)
SHAPE = (1, 32, 32)
ARCHS = ["vgg", "resnet", "allcnn"]


def randomised(name: str, seed: int = 0) -> nn.Module:
    """A zoo model in eval mode with random batch-norm statistics and affine parameters."""
    torch.manual_seed(seed)
    model = digits.BUILDERS[name]()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.2)
    return model.eval()


def pseudo_labelled(model: nn.Module, n: int = 64, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Random inputs labelled by the model itself (its accuracy is 1)."""
    x = torch.randn(n, *SHAPE, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return x, model(x).argmax(dim=1)


@pytest.fixture(scope="module")
def built() -> dict[str, tuple[nn.Module, dms.DMSNet, dms.DMSTable, torch.Tensor, torch.Tensor]]:
    """Per architecture: the original model, its DMSNet and table, and the validation data."""
    out = {}
    for name in ARCHS:
        model = randomised(name)
        x, y = pseudo_labelled(model)
        net, table = dms.make_dms(model, x, y)
        out[name] = (model, net, table, x, y)
    return out


@pytest.mark.parametrize("name", ARCHS)
def test_reorder_keeps_the_function(name):
    model = randomised(name)
    x = torch.randn(8, *SHAPE)
    before = model(x)
    reordered = copy.deepcopy(model)
    groups = dms.reorder(reordered, x[:1])
    assert groups and all(bool((g.l1_norms()[:-1] >= g.l1_norms()[1:]).all()) for g in groups)
    assert not torch.equal(reordered[0][0].weight, model[0][0].weight)  # something moved
    assert torch.allclose(reordered(x), before, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ARCHS)
def test_make_dms_leaves_the_model_and_level_0_is_the_network(name, built):
    model, net, _, x, _ = built[name]
    assert torch.equal(model(x), randomised(name)(x))  # the original was copied, not reordered
    assert torch.equal(net(x, 0), net.net(x))
    assert torch.equal(net(x), net.net(x))
    assert torch.allclose(net(x, 0), model(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ARCHS)
def test_full_scale_equals_the_network(name, built):
    _, net, table, x, _ = built[name]
    ties = table.ties
    assert torch.equal(dms.scaled_forward(net.net, x, {}, ties), net.net(x))
    assert torch.equal(dms.scaled_forward(net.net, x, {g: 1.0 for g in ties}, ties), net.net(x))


@pytest.mark.parametrize("name", ARCHS)
def test_scaling_equals_removing_the_channels(name, built):
    """Slicing at run time computes what physically removing the trailing channels computes."""
    _, net, table, x, _ = built[name]
    for level in (1, len(table.entries) // 2 + 1, len(table.entries)):
        scales = net.scales(level)
        pruned = copy.deepcopy(net.net)
        plan = {g: list(range(dms.active_channels(table.costs.widths[g], s), table.costs.widths[g]))
                for g, s in scales.items()}
        channels.remove_channels(pruned, x[:1], plan)
        assert torch.allclose(net(x, level), pruned(x), rtol=1e-4, atol=1e-5)


def test_ties_scale_every_producer_of_a_residual_group(built):
    _, net, table, x, _ = built["resnet"]
    tied = [g for g, producers in table.ties.items() if len(producers) > 1]
    assert tied  # the residual additions tie convolutions together
    out = dms.scaled_forward(net.net, x, {tied[0]: 0.5}, table.ties)
    assert out.shape == (len(x), 10)
    with pytest.raises(RuntimeError):  # scaling one producer alone breaks the addition
        dms.scaled_forward(net.net, x, {tied[0]: 0.5}, {tied[0]: table.ties[tied[0]][:1]})


def test_slices_are_views_and_the_model_is_untouched(built, monkeypatch):
    _, net, table, x, _ = built["resnet"]
    storages = {p.untyped_storage().data_ptr(): p for p in [*net.parameters(), *net.buffers()]}
    state = {k: (v.clone(), v.data_ptr()) for k, v in net.state_dict().items()}
    used = []

    def spy(fn):
        def wrapped(input, weight, *args, **kwargs):
            used.append(weight)
            return fn(input, weight, *args, **kwargs)
        return wrapped

    monkeypatch.setattr(F, "conv2d", spy(F.conv2d))
    monkeypatch.setattr(F, "linear", spy(F.linear))
    net.eval()
    net(x, len(table.entries))
    assert len(used) == sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in net.modules())
    assert any(w.shape != storages[w.untyped_storage().data_ptr()].shape for w in used)  # some were sliced
    for w in used:
        assert w.untyped_storage().data_ptr() in storages  # a view of a model tensor, not a copy
    after = net.state_dict()
    assert after.keys() == state.keys()
    for k, (value, ptr) in state.items():
        assert after[k].data_ptr() == ptr and torch.equal(after[k], value)
    assert not net.training
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in net.modules())


def test_training_mode_uses_batch_statistics_without_updating_them(built):
    _, net, table, x, _ = built["vgg"]
    net = copy.deepcopy(net).train()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    full = dms.scaled_forward(net.net, x, {}, table.ties)
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())
    assert torch.allclose(full, net.net(x), rtol=1e-4, atol=1e-5)  # the module itself, same statistics


def test_threads_at_different_levels_share_one_model(built):
    _, net, table, x, _ = built["resnet"]
    net.eval()
    x = x[:8]
    levels = list(range(len(table.entries) + 1))
    alone = {level: net(x, level) for level in levels}
    assert len({tuple(alone[level].flatten()[:5].tolist()) for level in levels}) > 1  # levels differ
    results: dict[int, list[torch.Tensor]] = {level: [] for level in levels}
    barrier = threading.Barrier(len(levels))

    def work(level: int) -> None:
        barrier.wait()
        for _ in range(4):
            results[level].append(net(x, level))

    threads = [threading.Thread(target=work, args=(level,)) for level in levels]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for level in levels:
        assert len(results[level]) == 4
        assert all(torch.equal(out, alone[level]) for out in results[level])


@pytest.mark.parametrize("name", ["vgg", "resnet"])
def test_dmsnet_saves_and_loads(name, built, tmp_path):
    _, net, table, x, _ = built[name]
    path = tmp_path / "dms.pt"
    save_model(net, path, {"method": "dms"})
    again, meta = read_model(path)
    assert isinstance(again, dms.DMSNet) and meta == {"method": "dms"}
    assert describe(again) == describe(net)
    assert again.levels == net.levels == len(table.entries)
    for level in range(net.levels + 1):
        assert torch.equal(again(x, level), net.eval()(x, level))


def test_a_saved_level_loads_as_a_model_that_runs_at_its_level(built, tmp_path):
    _, net, _, x, _ = built["resnet"]
    top = net.levels
    save_model(dms.DMSLevel(net, top), tmp_path / "level.pt")
    level, _ = read_model(tmp_path / "level.pt")
    assert isinstance(level, dms.DMSLevel) and level.level == top
    assert torch.equal(level(x), net.eval()(x, top))
    assert count_macs(level, SHAPE) == count_macs(net, SHAPE, forward=lambda v: net(v, top)) < count_macs(net, SHAPE)
    with pytest.raises(ValueError, match="level must be an integer"):
        dms.DMSLevel(net, top + 1)


@pytest.mark.parametrize("name", ARCHS)
def test_table_orders_by_sensitivity_and_saves_equal_macs(name, built):
    model, net, table, x, y = built[name]
    costs, entries = table.costs, table.entries
    assert [e.sensitivity for e in entries] == sorted(e.sensitivity for e in entries)
    assert table.base_accuracy == 1.0
    first = entries[0]
    alone = dms._accuracy(net.net, x, y, {first.group: first.probe_factor}, table.ties)
    assert first.sensitivity == pytest.approx(table.base_accuracy - alone)
    scales: dict[str, float] = {}
    for e in entries:
        assert 0.5 <= e.factor < 1 and e.active == dms.active_channels(e.width, e.factor) == round(e.factor * e.width)
        before = costs.macs(scales)
        assert e.saving == before - costs.macs({**scales, e.group: e.factor}) > 0
        best = min(abs(before - costs.macs({**scales, e.group: k / e.width}) - table.target_saving)
                   for k in range(math.ceil(0.5 * e.width), e.width))
        assert abs(e.saving - table.target_saving) == best  # as close to Δ as whole channels allow
        scales[e.group] = e.factor
        assert net.scales(len(scales)) == scales  # level k scales the first k entries
    savings = [e.saving for e in entries]
    assert max(savings[:-1]) < 2 * min(savings[:-1])  # about equal (the last may be capped by min_factor)


def test_table_with_a_target_saving():
    model = randomised("vgg")
    x, y = pseudo_labelled(model, n=32)
    dms.reorder(model, x[:1])
    table = dms.build_table(model, x, y, saving=0.05, min_factor=0.25)
    full = table.costs.macs({})
    assert table.target_saving == pytest.approx(0.05 * full)
    assert all(0.25 <= e.factor < 1 for e in table.entries)


@pytest.mark.parametrize("round_to", [8, 16])
def test_rounded_table_runs_whole_blocks_of_channels(round_to):
    model = randomised("resnet")
    x, y = pseudo_labelled(model, n=32)
    net, table = dms.make_dms(model, x, y, round_to=round_to)
    assert table.entries and all(e.active % round_to == 0 and e.active < e.width for e in table.entries)
    wide = {g: w for g, w in table.costs.widths.items() if w > round_to}
    assert {e.group for e in table.entries} <= set(wide)  # a group of ≤ round_to channels stays whole
    top = net(x[:4], net.levels)
    assert top.shape == (4, 10)


def test_rounding_that_leaves_nothing_to_scale_is_refused():
    model = randomised("vgg")  # widths 16, 32, 64: nothing is a multiple of 128 below its width
    x, y = pseudo_labelled(model, n=16)
    with pytest.raises(ValueError, match="round_to=128"):
        dms.make_dms(model, x, y, round_to=128)
    with pytest.raises(ValueError, match="round_to must be a positive integer"):
        dms.make_dms(model, x, y, round_to=0)


@pytest.mark.parametrize("name", ARCHS)
def test_eq2_equals_the_counted_macs(name, built):
    _, net, table, _, _ = built[name]
    rows = dms.level_costs(net, SHAPE)
    assert [r.level for r in rows] == list(range(len(table.entries) + 1))
    costs = table.costs
    for r in rows:
        scales = net.scales(r.level)
        assert r.predicted_macs == r.counted_macs
        assert r.predicted_conv_macs == r.counted_macs - costs.linear_macs(scales)
        direct = count_macs(net, SHAPE, forward=lambda x: dms.scaled_forward(net.net, x, scales, table.ties))
        assert direct == r.counted_macs
    assert all(a.counted_macs > b.counted_macs for a, b in zip(rows, rows[1:]))


def test_eq2_in_the_papers_form_on_a_chain(built):
    """VGG is a chain: Eq. (2) is Σ s_{i−1}·s_i·C_i over its convolutions; the linear layers add the rest."""
    _, net, table, _, _ = built["vgg"]
    convs = [(name, m) for name, m in net.net.named_modules() if isinstance(m, nn.Conv2d)]
    full = {layer.name: layer.macs for layer in table.costs.layers}
    level = len(table.entries)
    scales = net.scales(level)
    s = [1.0] + [dms.active_channels(m.out_channels, scales[n]) / m.out_channels if n in scales else 1.0
                 for n, m in convs]
    eq2 = sum(s[i] * s[i + 1] * full[n] for i, (n, _) in enumerate(convs))
    k = dms.active_channels(64, scales["6.0"]) if "6.0" in scales else 64
    linear = k * 64 + 64 * 10  # Linear(64, 64) reads the last group, Linear(64, 10) is unscaled
    assert table.costs.conv_macs(scales) == round(eq2)
    assert count_macs(net, SHAPE, forward=lambda x: net(x, level)) == round(eq2) + linear


def test_level_costs_with_latency(built):
    _, net, table, _, _ = built["vgg"]
    rows = dms.level_costs(net, SHAPE, latency=True, batch_sizes=(1, 2), min_run_time=0.01)
    assert all(set(r.latency_ms) == {1, 2} and r.device == "cpu" for r in rows)


# ---- bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize("factor", [0.0, -0.5, 1.5, float("nan"), True, "0.5"])
def test_factor_outside_0_1_is_refused(built, factor):
    _, net, table, x, _ = built["vgg"]
    group = table.entries[0].group
    with pytest.raises(ValueError, match=f"scale of group '{group}' must be a number in \\(0, 1\\]"):
        dms.scaled_forward(net.net, x, {group: factor}, table.ties)


def test_unknown_group_is_refused(built):
    _, net, table, x, _ = built["vgg"]
    with pytest.raises(ValueError, match="unknown channel group 'nope'"):
        dms.scaled_forward(net.net, x, {"nope": 0.5}, table.ties)


@pytest.mark.parametrize("level", [-1, 99, 1.0, True])
def test_level_beyond_the_table_is_refused(built, level):
    _, net, table, x, _ = built["vgg"]
    with pytest.raises(ValueError, match=f"level must be an integer in 0..{len(table.entries)}"):
        net(x, level)


def test_a_model_without_convolutions_is_refused():
    mlp = digits.mlp()
    x = torch.randn(4, *SHAPE)
    y = torch.zeros(4, dtype=torch.long)
    for call in (lambda: dms.reorder(mlp, x[:1]), lambda: dms.make_dms(mlp, x, y),
                 lambda: dms.DMSNet(mlp, [], {})):
        with pytest.raises(ValueError, match="has no Conv2d"):
            call()


def test_table_needs_a_reordered_model_and_sane_bounds():
    model = randomised("vgg")
    x, y = pseudo_labelled(model, n=16)
    with pytest.raises(ValueError, match="not reordered"):
        dms.build_table(model, x, y)
    dms.reorder(model, x[:1])
    for kwargs, message in [({"min_factor": 1.0}, "min_factor must be a number in \\(0, 1\\)"),
                            ({"base_factor": 0.0}, "base_factor must be a number in \\(0, 1\\)"),
                            ({"saving": 1.5}, "saving must be a share")]:
        with pytest.raises(ValueError, match=message):
            dms.build_table(model, x, y, **kwargs)


def test_unsupported_layers_are_named():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.GELU(), nn.Conv2d(4, 4, 3))
    with pytest.raises(ValueError, match="layer '1' \\(GELU\\) is not supported"):
        dms.reorder(model, torch.randn(1, *SHAPE))
