"""scikit-learn's bundled 8×8 handwritten digits (1,797 real images), upscaled for convolutional models."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from qoeflow.data import Split


def _class_quantiles(labels: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A random order of the items and each item's position in (0, 1) within its class in that order."""
    order = rng.permutation(len(labels))
    quantile = np.empty(len(labels))
    for c in np.unique(labels):
        members = order[labels[order] == c]
        quantile[members] = (np.arange(len(members)) + 0.5) / len(members)
    return order, quantile


def stratified_parts(labels: np.ndarray, fractions: tuple[float, float], seed: int,
                     limit: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of (train, val, test), stratified by label; ``fractions`` = (val, test); ``limit`` caps the total."""
    rng = np.random.default_rng(seed)
    index = np.arange(len(labels))
    if limit is not None and limit < len(labels):
        order, quantile = _class_quantiles(labels, rng)
        index = order[np.argsort(quantile[order], kind="stable")][:limit]  # classes interleaved, then cut
    order, quantile = _class_quantiles(labels[index], rng)
    val_fraction, test_fraction = fractions
    q = quantile[order]
    test = index[order[q < test_fraction]]
    val = index[order[(q >= test_fraction) & (q < test_fraction + val_fraction)]]
    train = index[order[q >= test_fraction + val_fraction]]
    return train, val, test


def digits_split(size: int = 32, val_fraction: float = 0.2, test_fraction: float = 0.2, seed: int = 0,
                 limit: int | None = None) -> Split:
    """Digits in [0, 1], bilinearly upscaled to (N, 1, size, size) float32; labels int64; stratified split."""
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    if val_fraction < 0 or test_fraction < 0 or val_fraction + test_fraction >= 1:
        raise ValueError(f"val_fraction + test_fraction must lie in [0, 1), got {val_fraction} + {test_fraction}")
    if limit is not None and limit < 3:
        raise ValueError(f"limit must be at least 3 (or null), got {limit}")
    bunch = load_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)
    if size != images.shape[-1]:
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False).clamp_(0.0, 1.0)
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    train, val, test = (torch.from_numpy(p) for p in
                        stratified_parts(bunch.target, (val_fraction, test_fraction), seed, limit))
    return Split(images[train].contiguous(), labels[train], images[val].contiguous(), labels[val],
                 images[test].contiguous(), labels[test], task="digits")
