"""Generated crowd-counting scenes: head-like blobs over real photo textures, with exact density maps.

Backgrounds are random crops (random scale, flip, brightness) of scikit-learn's bundled sample photos.
Each scene has a count drawn uniformly in [min_count, max_count]; part of its people gather in a few
clusters, the rest spread uniformly. The target is a density map at ``size / density_stride``: one
Gaussian per person, normalised over the map (kernels clipped at the border are renormalised), so each
map sums to its count to float precision.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_sample_images

from qoeflow.data import Split

DENSITY_SIGMA = 1.0  # density kernel width, in output (density map) pixels


@lru_cache(maxsize=1)
def _photos() -> tuple[torch.Tensor, ...]:
    """The bundled sample photographs (china, flower) as (3, H, W) float32 in [0, 1]."""
    return tuple(torch.from_numpy(img.astype(np.float32) / 255.0).permute(2, 0, 1).contiguous()
                 for img in load_sample_images().images)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random crop of a photo (side 1-3× ``size``), resized to size×size, flipped and brightened."""
    photo = _photos()[rng.integers(len(_photos()))]
    _, height, width = photo.shape
    side = int(rng.integers(size, min(3 * size, height, width) + 1))
    top, left = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
    crop = photo[:, top:top + side, left:left + side].unsqueeze(0)
    if side != size:
        crop = F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    image = crop[0].numpy().astype(np.float64)
    if rng.random() < 0.5:
        image = image[:, :, ::-1]
    if rng.random() < 0.5:
        image = image[:, ::-1, :]
    return np.clip(image * rng.uniform(0.7, 1.3), 0.0, 1.0)


def _points(rng: np.random.Generator, count: int, size: int) -> np.ndarray:
    """``count`` (x, y) locations in [0, size): a share in 1-3 Gaussian clusters, the rest uniform."""
    clustered = int(round(count * rng.uniform(0.3, 0.8)))
    centres = rng.uniform(0.15 * size, 0.85 * size, size=(int(rng.integers(1, 4)), 2))
    which = rng.integers(len(centres), size=clustered)
    near = centres[which] + rng.normal(0.0, rng.uniform(0.06, 0.15) * size, size=(clustered, 2))
    spread = rng.uniform(0.0, size, size=(count - clustered, 2))
    return np.clip(np.concatenate([near, spread]), 0.0, np.nextafter(size, 0))


def _gaussians(points: np.ndarray, sigma: np.ndarray, size: int) -> np.ndarray:
    """Per point, an unnormalised Gaussian over a size×size grid of pixel centres: (P, size, size)."""
    centres = np.arange(size) + 0.5
    gx = np.exp(-0.5 * ((centres[None, :] - points[:, :1]) / sigma[:, None]) ** 2)
    gy = np.exp(-0.5 * ((centres[None, :] - points[:, 1:]) / sigma[:, None]) ** 2)
    return gy[:, :, None] * gx[:, None, :]


def render_scene(rng: np.random.Generator, size: int, count: int, density_stride: int) -> tuple[np.ndarray, np.ndarray]:
    """One scene: image (3, size, size) in [0, 1] and density map (1, size/s, size/s) summing to ``count``."""
    image = _background(rng, size)
    points = _points(rng, count, size)
    blobs = _gaussians(points, rng.uniform(1.0, 2.0, size=count), size)
    # heads contrast with their surroundings: dark on bright ground, bright on dark (15% the other way)
    ground = (blobs[:, None] * image[None]).sum(axis=(1, 2, 3)) / (3 * blobs.sum(axis=(1, 2)))
    dark = (ground > 0.45) ^ (rng.random(count) < 0.15)
    colours = np.where(dark[:, None], rng.uniform(0.0, 0.15, (count, 3)), rng.uniform(0.85, 1.0, (count, 3)))
    alphas = rng.uniform(0.6, 0.95, count)
    for blob, colour, alpha in zip(blobs, colours, alphas):
        weight = alpha * blob
        image = image * (1.0 - weight) + colour[:, None, None] * weight
    cells = size // density_stride
    kernels = _gaussians(points / density_stride, np.full(count, DENSITY_SIGMA), cells)
    kernels /= kernels.sum(axis=(1, 2), keepdims=True)
    density = kernels.sum(axis=0)[None]
    return image.astype(np.float32), density.astype(np.float32)


def crowd_scenes(n: int, size: int, min_count: int, max_count: int, density_stride: int,
                 seed: int, part: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` scenes of one part: images (n, 3, size, size), densities (n, 1, c, c), counts (n,) int64."""
    cells = size // density_stride
    images = np.empty((n, 3, size, size), np.float32)
    densities = np.empty((n, 1, cells, cells), np.float32)
    counts = np.empty(n, np.int64)
    for i in range(n):
        rng = np.random.default_rng([seed, part, i])  # scene i does not depend on n
        counts[i] = rng.integers(min_count, max_count + 1)
        images[i], densities[i] = render_scene(rng, size, int(counts[i]), density_stride)
    return torch.from_numpy(images), torch.from_numpy(densities), torch.from_numpy(counts)


def crowd_split(n_train: int = 256, n_val: int = 64, n_test: int = 64, size: int = 64, min_count: int = 5,
                max_count: int = 60, density_stride: int = 4, seed: int = 0) -> Split:
    """Generated crowd scenes; scene i of each part has its own seeded stream, so sizes change no other scene."""
    if min(n_train, n_val, n_test) < 1:
        raise ValueError(f"n_train, n_val, n_test must be positive, got {n_train}, {n_val}, {n_test}")
    if density_stride < 1 or size < density_stride or size % density_stride:
        raise ValueError(f"size ({size}) must be a positive multiple of density_stride ({density_stride})")
    if size > 427:
        raise ValueError(f"size must be at most 427 (the sample photos' height), got {size}")
    if not 0 <= min_count <= max_count:
        raise ValueError(f"need 0 <= min_count <= max_count, got {min_count}, {max_count}")
    parts = [crowd_scenes(n, size, min_count, max_count, density_stride, seed, i)
             for i, n in enumerate((n_train, n_val, n_test))]
    (xt, yt, ct), (xv, yv, cv), (xs, ys, cs) = parts
    return Split(xt, yt, xv, yv, xs, ys, task="crowd", counts={"train": ct, "val": cv, "test": cs})
