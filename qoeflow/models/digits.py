"""Digit classifiers: input (1, size, size), 10 logits. Sized for a 2-core CPU."""

from __future__ import annotations

from torch import nn

from qoeflow.models.arch import composite


def conv_bn(c_in: int, c_out: int, k: int = 3, stride: int = 1, dilation: int = 1, relu: bool = True) -> nn.Sequential:
    """Conv (same padding) + BatchNorm (+ ReLU)."""
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, k, stride, padding=dilation * (k // 2), dilation=dilation,
                                         bias=False), nn.BatchNorm2d(c_out)]
    return nn.Sequential(*layers, nn.ReLU(inplace=True)) if relu else nn.Sequential(*layers)


@composite
class BasicBlock(nn.Module):
    """ResNet basic block: two 3×3 conv-BN, identity or 1×1 projection shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.body = nn.Sequential(conv_bn(c_in, c_out, 3, stride), conv_bn(c_out, c_out, 3, relu=False))
        self.shortcut = (nn.Identity() if stride == 1 and c_in == c_out
                         else conv_bn(c_in, c_out, 1, stride, relu=False))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(self.body(x) + self.shortcut(x))


def mlp(size: int = 32, hidden: tuple[int, ...] = (256, 128), classes: int = 10) -> nn.Module:
    """Multi-layer perceptron on the flattened image."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = size * size
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU(inplace=True)]
        width = h
    return nn.Sequential(*layers, nn.Linear(width, classes))


def vgg(size: int = 32, classes: int = 10) -> nn.Module:
    """Small VGG: 3×3 conv-BN-ReLU stacks [16, 16, M, 32, 32, M, 64, M], global pool, two linear layers."""
    return nn.Sequential(
        conv_bn(1, 16), conv_bn(16, 16), nn.MaxPool2d(2),
        conv_bn(16, 32), conv_bn(32, 32), nn.MaxPool2d(2),
        conv_bn(32, 64), nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 64), nn.ReLU(inplace=True), nn.Linear(64, classes))


def resnet(size: int = 32, classes: int = 10) -> nn.Module:
    """Small ResNet: 3×3 stem (16), basic blocks 16 → 32 (/2) → 64 (/2), global average pool, linear."""
    return nn.Sequential(
        conv_bn(1, 16), BasicBlock(16, 16), BasicBlock(16, 32, 2), BasicBlock(32, 64, 2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, classes))


def allcnn(size: int = 32, classes: int = 10) -> nn.Module:
    """ALL-CNN-C style: only convolutions (strided 3×3 convs instead of pooling), 1×1 class conv,
    global average pooling; widths scaled down from 96/192 to 24/48."""
    return nn.Sequential(
        conv_bn(1, 24), conv_bn(24, 24, stride=2),
        conv_bn(24, 48), conv_bn(48, 48, stride=2),
        conv_bn(48, 48), conv_bn(48, 48, k=1), nn.Conv2d(48, classes, 1),
        nn.AdaptiveAvgPool2d(1), nn.Flatten())


BUILDERS = {"mlp": mlp, "vgg": vgg, "resnet": resnet, "allcnn": allcnn}
