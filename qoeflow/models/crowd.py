"""Crowd-density regressors: input (3, size, size), linear density map (1, size/4, size/4).

Every model's last layer (the 1×1 density head) starts at zero, weights and bias: a fresh model predicts
an empty map. With PyTorch's default init the head's bias alone, summed over the map's 256 cells, put the
first counts at -60 to +40 heads, and the first epochs went on unlearning it (benchmarks/results/crowd.md).
"""

from __future__ import annotations

import torch
from torch import nn

from qoeflow.models.digits import BasicBlock, conv_bn


def _zero_head(model: nn.Module) -> nn.Module:
    """Zero the last convolution (the density head) of ``model``, so it starts predicting an empty map."""
    head = [m for m in model.modules() if isinstance(m, nn.Conv2d)][-1]
    nn.init.zeros_(head.weight)
    if head.bias is not None:
        nn.init.zeros_(head.bias)
    return model


class MCNN(nn.Module):
    """Multi-column CNN (Zhang et al. 2016): three columns with large/medium/small kernels (9/7/5),
    two 2×2 pools each, fused by a 1×1 conv. Widths halved from the paper; BatchNorm after every
    convolution (as common re-implementations do): without it, on raw [0, 1] pixels, its counts swung by
    ±15 heads between epochs and it stayed near 0.8× the median baseline's error after 15 epochs."""

    def __init__(self):
        super().__init__()

        def column(kernels: tuple[int, int], widths: tuple[int, int, int, int]) -> nn.Sequential:
            k1, k2 = kernels
            a, b, c, d = widths
            return nn.Sequential(conv_bn(3, a, k1), nn.MaxPool2d(2), conv_bn(a, b, k2), nn.MaxPool2d(2),
                                 conv_bn(b, c, k2), conv_bn(c, d, k2))

        self.columns = nn.ModuleList([column((9, 7), (8, 16, 8, 4)), column((7, 5), (10, 20, 10, 5)),
                                      column((5, 3), (12, 24, 12, 6))])
        self.fuse = nn.Conv2d(4 + 5 + 6, 1, 1)

    def forward(self, x):
        return self.fuse(torch.cat([col(x) for col in self.columns], dim=1))


def mcnn(size: int = 64) -> nn.Module:
    return _zero_head(MCNN())


def csrnet(size: int = 64) -> nn.Module:
    """CSRNet-style (Li et al. 2018): VGG front end (two pools, /4) + dilated 3×3 back end (dilation 2)."""
    return _zero_head(nn.Sequential(
        conv_bn(3, 16), conv_bn(16, 16), nn.MaxPool2d(2),
        conv_bn(16, 32), conv_bn(32, 32), nn.MaxPool2d(2),
        conv_bn(32, 48),
        conv_bn(48, 48, dilation=2), conv_bn(48, 32, dilation=2), conv_bn(32, 16, dilation=2),
        nn.Conv2d(16, 1, 1)))


def vggdecoder(size: int = 64) -> nn.Module:
    """VGG encoder down to /8, then a small decoder: transposed conv up to /4, conv, 1×1 density head."""
    return _zero_head(nn.Sequential(
        conv_bn(3, 16), nn.MaxPool2d(2),
        conv_bn(16, 32), nn.MaxPool2d(2),
        conv_bn(32, 48), nn.MaxPool2d(2),
        conv_bn(48, 64),
        nn.ConvTranspose2d(64, 32, 2, stride=2), nn.ReLU(inplace=True),
        conv_bn(32, 32), nn.Conv2d(32, 1, 1)))


def resnet(size: int = 64) -> nn.Module:
    """Small ResNet: strided stem (/2), basic blocks 16 → 32 (/2) → 48, 3×3 + 1×1 density head."""
    return _zero_head(nn.Sequential(
        conv_bn(3, 16, stride=2), BasicBlock(16, 16), BasicBlock(16, 32, 2), BasicBlock(32, 48),
        conv_bn(48, 32), nn.Conv2d(32, 1, 1)))


BUILDERS = {"mcnn": mcnn, "csrnet": csrnet, "vggdecoder": vggdecoder, "resnet": resnet}
STRIDE = 4
