"""Sprites: scikit-learn's 8×8 handwritten digits pasted over crops of its sample photographs.

Ten classes, one grey channel, size×size (default 32), deterministic from a seed. This is the one
generator of these images: the `sprites` task family, and the video stage and the inference benchmark
built on the same primitives, all draw from here.

Choices:

* Glyphs are the real digits of ``load_digits`` (1,797 images), split by the digits family's own
  stratified split (``stratified_parts``, val/test fractions 0.2/0.2, same seed), so the train, val
  and test parts are drawn from disjoint glyphs: the test measures unseen handwriting.
* Backgrounds are square crops of a random photo (china or flower, as luminance in [0, 1]) of a random
  side between ``size`` and ``max_zoom × size`` pixels (at most the photo's height), at a random place,
  mirrored half of the time, resampled to size×size (bilinear at 2× then 2×2 mean, against aliasing),
  then pulled towards mid-grey: 0.5 + ``texture`` × (photo - 0.5). The default ``texture`` 0.2 is what
  keeps the task learnable by the small digit models: at 1 (the raw photos) the digits VGG stays near
  50 % test accuracy after 10 epochs, at 0.2 it reaches about 85-93 %, at 0 (flat grey) about 93 %.
* A digit is upscaled (bilinear) to a side of ``scale`` × size, ``scale`` uniform in
  [scale_min, scale_max], placed at a uniform (sub-pixel) position fully inside the image. Its ink
  differs from the mean of the background under its strokes by ``contrast`` (uniform in
  [contrast_min, contrast_max]), brighter or darker at random; when that ink would leave [0, 1] the other
  polarity is taken (and clipped if neither fits). The glyph's intensity is the alpha of the blend.
* Gaussian noise of standard deviation ``noise`` is added to every pixel, then values are clamped to [0, 1].
* Defaults (``sprites_split``): 4,000 train images (about four draws per train glyph: with 2,000 the VGG
  memorises them and generalises worse), 500 val, 500 test; scale 0.5-0.9, contrast 0.3-0.6, noise 0.04.
* Labels come in blocks of ten, each a permutation of the classes, so any part is balanced (counts
  differ by at most one). Each block of ten images has its own random stream ``(seed, part, block)``:
  the size of a part changes none of its other images, and no part depends on another's size.

Everything is vectorised over the images (torch ``grid_sample``); 3,000 images take a fraction of a second.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits, load_sample_images

from qoeflow.data import PARTS, Split
from qoeflow.data.digits import stratified_parts

CLASSES = 10
GLYPH_FRACTIONS = (0.2, 0.2)  # (val, test) share of the glyphs: the digits family's default split
LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601 luminance weights


@lru_cache(maxsize=1)
def grey_photos() -> torch.Tensor:
    """The sample photographs (china, flower) as luminance: (2, 1, H, W) float32 in [0, 1]."""
    photos = np.stack([img.astype(np.float32) / 255.0 for img in load_sample_images().images])
    grey = (photos * np.asarray(LUMA, np.float32)).sum(axis=-1)
    return torch.from_numpy(np.clip(grey, 0.0, 1.0)).unsqueeze(1).contiguous()


def random_crops(rng: np.random.Generator, n: int, size: int, max_zoom: float = 4.0) -> dict[str, np.ndarray]:
    """``n`` random square crop boxes: photo index, top, left, side (pixels, float) and a mirror flag."""
    _, _, height, width = grey_photos().shape
    largest = min(max_zoom * size, height, width)
    side = rng.uniform(min(size, largest), largest, n)
    return {"photo": rng.integers(len(grey_photos()), size=n), "top": rng.uniform(0.0, 1.0, n) * (height - side),
            "left": rng.uniform(0.0, 1.0, n) * (width - side), "side": side, "mirror": rng.random(n) < 0.5}


def crop_photos(photo: np.ndarray, top: np.ndarray, left: np.ndarray, side: np.ndarray, mirror: np.ndarray,
                size: int) -> torch.Tensor:
    """The boxes (one per image, pixel units of the photo) resampled to (n, 1, size, size) float32 in [0, 1].

    Bilinear sampling at 2× the output resolution, then 2×2 means. A video pans by moving the boxes."""
    photos = grey_photos()
    _, _, height, width = photos.shape
    n, fine = len(side), 2 * size
    steps = (np.arange(fine) + 0.5) / fine  # sample centres across the box, in (0, 1)
    across = np.where(np.asarray(mirror, bool)[:, None], 1.0 - steps[None], steps[None])
    xs = 2.0 * (np.asarray(left)[:, None] + across * np.asarray(side)[:, None]) / width - 1.0  # (n, fine)
    ys = 2.0 * (np.asarray(top)[:, None] + steps[None] * np.asarray(side)[:, None]) / height - 1.0
    grid = np.stack(np.broadcast_arrays(xs[:, None, :], ys[:, :, None]), axis=-1)  # (n, fine, fine, 2)
    grid = torch.from_numpy(grid.astype(np.float32))
    out = torch.empty(n, 1, fine, fine)
    photo = np.asarray(photo)
    for p in range(len(photos)):
        chosen = torch.from_numpy(np.flatnonzero(photo == p))
        if len(chosen):  # all boxes of one photo as one tall grid: no copy of the photo per image
            rows = grid[chosen].reshape(1, len(chosen) * fine, fine, 2)
            sampled = F.grid_sample(photos[p:p + 1], rows, mode="bilinear", padding_mode="border", align_corners=False)
            out[chosen] = sampled.reshape(len(chosen), 1, fine, fine)
    return F.avg_pool2d(out, 2).clamp_(0.0, 1.0)


def photo_backgrounds(rng: np.random.Generator, n: int, size: int, max_zoom: float = 4.0) -> torch.Tensor:
    """``n`` random grey photo crops, (n, 1, size, size) float32 in [0, 1]."""
    return crop_photos(**random_crops(rng, n, size, max_zoom), size=size)


def flatten(images: torch.Tensor, texture: float, mid: float = 0.5) -> torch.Tensor:
    """Deviations from mid-grey scaled by ``texture`` (1: unchanged, 0: flat grey)."""
    return mid + texture * (images - mid)


@lru_cache(maxsize=8)
def glyph_bank(seed: int = 0, fractions: tuple[float, float] = GLYPH_FRACTIONS) -> dict[str, tuple[torch.Tensor, ...]]:
    """Per part: (glyphs (M, 8, 8) float32 in [0, 1], labels (M,) int64, indices into ``load_digits``),
    split as the digits family splits them (``stratified_parts``), so the parts share no glyph. Cached: read-only."""
    bunch = load_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32) / 16.0)
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    parts = stratified_parts(bunch.target, fractions, seed)
    return {name: (images[idx].contiguous(), labels[idx], torch.from_numpy(idx))
            for name, idx in zip(PARTS, parts)}


def paste_glyphs(canvas: torch.Tensor, glyphs: torch.Tensor, top: torch.Tensor, left: torch.Tensor,
                 side: torch.Tensor, contrast: torch.Tensor, polarity: torch.Tensor) -> torch.Tensor:
    """One glyph per image pasted onto ``canvas`` (n, 1, H, W): a new tensor, values in [0, 1].

    ``glyphs`` (n, h, w) in [0, 1] is the alpha of the ink; its box has its top-left corner at
    (``top``, ``left``) and sides ``side`` (pixels, float, bilinear). The ink is the mean of the canvas
    under the strokes plus ``polarity`` (+1 brighter, -1 darker) × ``contrast``; if that leaves [0, 1]
    the other polarity is used (clipped if neither fits)."""
    n, _, height, width = canvas.shape
    top, left, side = (torch.as_tensor(v, dtype=torch.float32).reshape(n, 1) for v in (top, left, side))
    xs = 2.0 * (torch.arange(width, dtype=torch.float32) + 0.5 - left) / side - 1.0  # (n, W)
    ys = 2.0 * (torch.arange(height, dtype=torch.float32) + 0.5 - top) / side - 1.0  # (n, H)
    grid = torch.stack(torch.broadcast_tensors(xs[:, None, :], ys[:, :, None]), dim=-1)  # (n, H, W, 2)
    alpha = F.grid_sample(glyphs.unsqueeze(1).float(), grid, mode="bilinear", padding_mode="zeros",
                          align_corners=False).clamp_(0.0, 1.0)
    ground = (alpha * canvas).sum(dim=(1, 2, 3)) / alpha.sum(dim=(1, 2, 3)).clamp_min(1e-6)
    contrast = torch.as_tensor(contrast, dtype=torch.float32).reshape(n)
    polarity = torch.as_tensor(polarity, dtype=torch.float32).reshape(n)
    ink = ground + polarity * contrast
    outside = (ink < 0.0) | (ink > 1.0)
    ink = torch.where(outside, ground - polarity * contrast, ink).clamp(0.0, 1.0)
    return canvas * (1.0 - alpha) + ink.reshape(n, 1, 1, 1) * alpha


def _block(rng: np.random.Generator, size: int, per_class: np.ndarray, scale: tuple[float, float],
           contrast: tuple[float, float], noise: float, max_zoom: float) -> dict[str, np.ndarray]:
    """The random draws of ten images (one of each class, in random order)."""
    labels = rng.permutation(CLASSES)
    side = rng.uniform(*scale, CLASSES) * size
    return {"label": labels, "pick": (rng.random(CLASSES) * per_class[labels]).astype(np.int64),
            **{f"bg_{k}": v for k, v in random_crops(rng, CLASSES, size, max_zoom).items()},
            "side": side, "top": rng.uniform(0.0, 1.0, CLASSES) * (size - side),
            "left": rng.uniform(0.0, 1.0, CLASSES) * (size - side),
            "contrast": rng.uniform(*contrast, CLASSES), "polarity": np.where(rng.random(CLASSES) < 0.5, 1.0, -1.0),
            "noise": rng.normal(0.0, noise, (CLASSES, 1, size, size)).astype(np.float32)}


def sprite_images(n: int, glyphs: torch.Tensor, labels: torch.Tensor, size: int = 32, seed: int = 0, part: int = 0,
                  scale: tuple[float, float] = (0.5, 0.9), contrast: tuple[float, float] = (0.3, 0.6),
                  noise: float = 0.04, texture: float = 0.2, max_zoom: float = 4.0
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` sprites from a glyph bank part: images (n, 1, size, size) float32 in [0, 1], labels (n,)
    int64, and the position in ``glyphs`` of the glyph each image shows."""
    order = torch.argsort(labels, stable=True)  # the bank's glyphs grouped by class
    per_class = np.bincount(labels.numpy(), minlength=CLASSES)
    if (per_class == 0).any():
        raise ValueError(f"the glyph bank lacks classes {np.flatnonzero(per_class == 0).tolist()}")
    starts = np.concatenate([[0], np.cumsum(per_class)[:-1]])
    blocks = [_block(np.random.default_rng([seed, part, b]), size, per_class, scale, contrast, noise, max_zoom)
              for b in range(-(-n // CLASSES))]
    draw = {k: np.concatenate([blk[k] for blk in blocks])[:n] for k in blocks[0]}
    chosen = order[torch.from_numpy(starts[draw["label"]] + draw["pick"])]
    canvas = crop_photos(draw["bg_photo"], draw["bg_top"], draw["bg_left"], draw["bg_side"], draw["bg_mirror"], size)
    canvas = flatten(canvas, texture)
    images = paste_glyphs(canvas, glyphs[chosen], *(torch.from_numpy(draw[k]) for k in
                                                    ("top", "left", "side", "contrast", "polarity")))
    images = (images + torch.from_numpy(draw["noise"])).clamp_(0.0, 1.0)
    return images.contiguous(), labels[chosen].clone(), chosen


def sprites_split(n_train: int = 4000, n_val: int = 500, n_test: int = 500, size: int = 32, seed: int = 0,
                  scale_min: float = 0.5, scale_max: float = 0.9, contrast_min: float = 0.3, contrast_max: float = 0.6,
                  noise: float = 0.04, texture: float = 0.2, max_zoom: float = 4.0) -> Split:
    """Sprites of ten classes, (N, 1, size, size) float32 in [0, 1], labels int64, balanced; each part
    drawn from its own glyphs (the digits split of ``seed``)."""
    if min(n_train, n_val, n_test) < 1:
        raise ValueError(f"n_train, n_val, n_test must be positive, got {n_train}, {n_val}, {n_test}")
    if not 8 <= size <= 427:
        raise ValueError(f"size must lie in [8, 427] (the sample photos' height), got {size}")
    if not 0 < scale_min <= scale_max <= 1:
        raise ValueError(f"need 0 < scale_min <= scale_max <= 1, got {scale_min}, {scale_max}")
    if not 0 <= contrast_min <= contrast_max <= 1:
        raise ValueError(f"need 0 <= contrast_min <= contrast_max <= 1, got {contrast_min}, {contrast_max}")
    if noise < 0 or max_zoom < 1 or not 0 <= texture <= 1:
        raise ValueError(f"need noise >= 0, max_zoom >= 1 and texture in [0, 1], got {noise}, {max_zoom}, {texture}")
    bank = glyph_bank(seed)
    parts = [sprite_images(n, *bank[name][:2], size=size, seed=seed, part=i, scale=(scale_min, scale_max),
                           contrast=(contrast_min, contrast_max), noise=noise, max_zoom=max_zoom,
                           texture=texture)[:2]
             for i, (name, n) in enumerate(zip(PARTS, (n_train, n_val, n_test)))]
    (xt, yt), (xv, yv), (xs, ys) = parts
    return Split(xt, yt, xv, yv, xs, ys, task="sprites")
