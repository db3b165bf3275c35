"""Crowd-density regressors: input (3, size, size), linear density map (1, size/4, size/4)."""

from __future__ import annotations

import torch
from torch import nn

from qoeflow.models.digits import BasicBlock, conv_bn


def _conv_relu(c_in: int, c_out: int, k: int, dilation: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, k, padding=dilation * (k // 2), dilation=dilation), nn.ReLU(inplace=True)]


class MCNN(nn.Module):
    """Multi-column CNN (Zhang et al. 2016): three columns with large/medium/small kernels (9/7/5),
    two 2×2 pools each, fused by a 1×1 conv. Widths halved from the paper."""

    def __init__(self):
        super().__init__()

        def column(kernels: tuple[int, int], widths: tuple[int, int, int, int]) -> nn.Sequential:
            k1, k2 = kernels
            a, b, c, d = widths
            return nn.Sequential(*_conv_relu(3, a, k1), nn.MaxPool2d(2), *_conv_relu(a, b, k2), nn.MaxPool2d(2),
                                 *_conv_relu(b, c, k2), *_conv_relu(c, d, k2))

        self.columns = nn.ModuleList([column((9, 7), (8, 16, 8, 4)), column((7, 5), (10, 20, 10, 5)),
                                      column((5, 3), (12, 24, 12, 6))])
        self.fuse = nn.Conv2d(4 + 5 + 6, 1, 1)

    def forward(self, x):
        return self.fuse(torch.cat([col(x) for col in self.columns], dim=1))


def mcnn(size: int = 64) -> nn.Module:
    return MCNN()


def csrnet(size: int = 64) -> nn.Module:
    """CSRNet-style (Li et al. 2018): VGG front end (two pools, /4) + dilated 3×3 back end (dilation 2)."""
    return nn.Sequential(
        conv_bn(3, 16), conv_bn(16, 16), nn.MaxPool2d(2),
        conv_bn(16, 32), conv_bn(32, 32), nn.MaxPool2d(2),
        conv_bn(32, 48),
        conv_bn(48, 48, dilation=2), conv_bn(48, 32, dilation=2), conv_bn(32, 16, dilation=2),
        nn.Conv2d(16, 1, 1))


def vggdecoder(size: int = 64) -> nn.Module:
    """VGG encoder down to /8, then a small decoder: transposed conv up to /4, conv, 1×1 density head."""
    return nn.Sequential(
        conv_bn(3, 16), nn.MaxPool2d(2),
        conv_bn(16, 32), nn.MaxPool2d(2),
        conv_bn(32, 48), nn.MaxPool2d(2),
        conv_bn(48, 64),
        nn.ConvTranspose2d(64, 32, 2, stride=2), nn.ReLU(inplace=True),
        conv_bn(32, 32), nn.Conv2d(32, 1, 1))


def resnet(size: int = 64) -> nn.Module:
    """Small ResNet: strided stem (/2), basic blocks 16 → 32 (/2) → 48, 3×3 + 1×1 density head."""
    return nn.Sequential(
        conv_bn(3, 16, stride=2), BasicBlock(16, 16), BasicBlock(16, 32, 2), BasicBlock(32, 48),
        conv_bn(48, 32), nn.Conv2d(32, 1, 1))


BUILDERS = {"mcnn": mcnn, "csrnet": csrnet, "vggdecoder": vggdecoder, "resnet": resnet}
STRIDE = 4
