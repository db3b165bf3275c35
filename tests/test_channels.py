"""Channel groups (qoeflow/lifecycle/channels.py): residual additions tie channels together; reordering
keeps the function; removing channels shrinks every member layer."""

import pytest
import torch
from torch import nn

from qoeflow.lifecycle.channels import channel_groups, output_layer, permute, remove_channels, sort_by_l1
from qoeflow.models import build_model, count_params


def _model(name: str) -> nn.Module:
    torch.manual_seed(0)
    model = build_model("digits", name).eval()
    for m in model.modules():  # statistics a trained network would have, so that a wrong permutation shows
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1), m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5), m.bias.data.uniform_(-0.5, 0.5)
    return model


def test_residual_additions_tie_channels():
    model = _model("resnet")
    groups = {g.name: g for g in channel_groups(model, torch.zeros(1, 1, 32, 32))}
    assert [p for p, _ in groups["0.0"].producers] == ["0.0", "1.body.1.0"]  # stem and block 1 meet at an add
    assert [p for p, _ in groups["2.body.1.0"].producers] == ["2.body.1.0", "2.shortcut.0"]
    assert [p for p, _ in groups["1.body.0.0"].producers] == ["1.body.0.0"]  # inside a block: alone


@pytest.mark.parametrize("name", ["vgg", "resnet", "allcnn"])
def test_reordering_keeps_the_function(name):
    model = _model(name)
    x = torch.rand(8, 1, 32, 32)
    with torch.no_grad():
        before = model(x)
        groups = sort_by_l1(model, x[:1])
        after = model(x)
    assert torch.allclose(before, after, atol=1e-5)
    for group in groups:
        norms = group.l1_norms()
        assert torch.all(norms[:-1] >= norms[1:])  # decreasing ℓ1 norm


def test_output_layer_is_never_grouped():
    model = _model("allcnn")  # its output layer is a 1×1 convolution to the classes
    assert output_layer(model) is model[6]
    names = [g.name for g in channel_groups(model, torch.zeros(1, 1, 32, 32))]
    assert "6" not in names and len(names) == 6
    with pytest.raises(ValueError, match="no convolution or linear"):
        output_layer(nn.Sequential(nn.ReLU()))


def test_permutation_must_be_complete():
    model = _model("vgg")
    group = channel_groups(model, torch.zeros(1, 1, 32, 32))[0]
    with pytest.raises(ValueError, match="permutation"):
        permute(group, torch.tensor([0, 0, 1]))


@pytest.mark.parametrize("name", ["vgg", "resnet"])
def test_removing_channels_shrinks_the_network(name):
    model = _model(name)
    example = torch.zeros(1, 1, 32, 32)
    groups = channel_groups(model, example)
    params = count_params(model)
    remove_channels(model, example, {g.name: list(range(g.width // 2)) for g in groups})
    after = channel_groups(model, example)
    assert [g.width for g in after] == [g.width - g.width // 2 for g in groups]
    assert count_params(model) < params
    assert model(torch.rand(2, 1, 32, 32)).shape == (2, 10)


def test_removal_refuses_bad_plans():
    model = _model("vgg")
    example = torch.zeros(1, 1, 32, 32)
    with pytest.raises(ValueError, match="no channel group"):
        remove_channels(model, example, {"9.9": [0]})
    with pytest.raises(ValueError, match="keep at least one"):
        remove_channels(model, example, {"0.0": list(range(16))})
