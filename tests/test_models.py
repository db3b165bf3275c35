"""Model zoo: every model's output shape and cost; MAC counting against hand-computed layers."""

import pytest
import torch
from torch import nn

from qoeflow.families import FAMILIES
from qoeflow.models import MODELS, build_model, count_macs, count_params, input_shape

ALL = [(task, name) for task, names in MODELS.items() for name in names]


def test_zoo_lists_the_models():
    assert MODELS == {"digits": ("mlp", "vgg", "resnet", "allcnn"),
                      "crowd": ("mcnn", "csrnet", "vggdecoder", "resnet"),
                      "sprites": ("mlp", "vgg", "resnet", "allcnn")}
    assert input_shape("digits", 32) == (1, 32, 32) and input_shape("crowd", 64) == (3, 64, 64)


@pytest.mark.parametrize("task,name", ALL)
def test_forward_shape_and_cost(task, name):
    torch.manual_seed(0)
    model = build_model(task, name)
    x = torch.rand(2, *input_shape(task))
    out = model(x)
    assert out.shape == ((2, 10) if FAMILIES[task].kind == "classification" else (2, 1, 16, 16))
    assert torch.isfinite(out).all()
    layers = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)
    weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, layers))
    assert count_params(model) > weights > 1000
    assert count_macs(model, input_shape(task)) >= weights  # every weight is used at least once


@pytest.mark.parametrize("name", MODELS["crowd"])
def test_crowd_models_follow_input_size(name):
    model = build_model("crowd", name, size=32)
    assert model(torch.rand(1, 3, 32, 32)).shape == (1, 1, 8, 8)


def test_digits_mlp_takes_size():
    assert build_model("digits", "mlp", size=16)(torch.rand(3, 1, 16, 16)).shape == (3, 10)


def test_unknown_names_list_allowed():
    with pytest.raises(ValueError, match="mlp, vgg, resnet, allcnn"):
        build_model("digits", "alexnet")
    with pytest.raises(ValueError, match="digits, crowd"):
        build_model("video", "mlp")


def test_macs_of_hand_computed_layers():
    assert count_macs(nn.Conv2d(3, 8, 3, padding=1), (3, 10, 10)) == 8 * 10 * 10 * 3 * 9
    # stride 2, dilation 2, groups 2: out side (9 + 4 - 4 - 1) // 2 + 1 = 5; 2 input channels per group
    grouped = nn.Conv2d(4, 8, 3, stride=2, padding=2, dilation=2, groups=2)
    assert count_macs(grouped, (4, 9, 9)) == 8 * 5 * 5 * 2 * 9
    assert count_macs(nn.Linear(20, 5), (20,)) == 100
    assert count_macs(nn.ConvTranspose2d(4, 2, 2, stride=2), (4, 3, 3)) == 4 * 3 * 3 * 2 * 4
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
    assert count_macs(net, (1, 6, 6)) == 2 * 4 * 4 * 9 + 32 * 3


def test_count_macs_leaves_model_as_it_was():
    net = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    net.train()
    before = net[1].running_mean.clone()
    count_macs(net, (4,))
    assert net.training and torch.equal(net[1].running_mean, before)
    assert not any(m._forward_hooks for m in net.modules())


def test_count_params():
    assert count_params(nn.Linear(20, 5)) == 105
    assert count_params(nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8))) == 216 + 16
