"""Generated static-camera video clips: crowd heads or digit sprites moving over one photo background.

Two kinds, deterministic from the seed (the name is only a label): ``crowd_clip`` (colour, head blobs as
``crowd.render_scene`` draws them, with exact density maps) for the convolutional-caching inference
benchmark, and ``sprites_clip`` (grey, the digit glyphs of ``sprites``) for video indexing.

Choices:

* Static camera: one background per clip. Crowd: a crop of a colour sample photo with the clip's aspect
  ratio (box height 1-3× the frame height, shrunk to fit the photo), resized, flipped and brightened as
  ``crowd._background`` does. Sprites: a grey square crop (``random_crops``/``crop_photos`` at the larger
  side, cut to H×W) pulled to mid-grey by ``flatten(…, texture)``.
* Motion (``Motion``): a share ``moving`` of the ``objects`` walk in a straight line at constant velocity
  (speed uniform in [0.5, 1.5] × ``speed`` px/frame), the rest stand still. Every object vanishes with
  probability ``turnover / (100 × objects)`` per frame (geometric lifetimes), so a scene of standers loses
  ``turnover`` objects per 100 frames on average; walkers also leave through the border, which adds to that.
  Departures are balanced by Poisson arrivals: standers appear at a uniform place, walkers enter at a
  uniform point of the border (side chosen in proportion to its length) heading inwards at a
  cosine-distributed angle (the flux of a uniform crowd through a line). The walkers' arrival rate is
  their target number over their mean visible frames (estimated from 4,096 simulated entries), so the
  population stays around ``objects`` (Little's law); it starts at exactly ``objects``.
* An object is visible, drawn and listed in ``Clip.objects`` in frame t exactly when it is alive and its
  centre lies in [0, W) × [0, H) (a head or sprite partly outside counts). Track ids are stable and
  assigned in order of appearance; later ids are drawn over earlier ones (sprites may overlap).
* Heads look like ``crowd.render_scene``'s at the same pixel scale (the crowd models train on 64×64 scenes
  and run fully convolutionally on bigger frames): a Gaussian blob, sigma uniform in [1, 2] px, alpha in
  [0.6, 0.95], dark (RGB in [0, 0.15]) on bright ground and bright ([0.85, 1]) on dark ground, the other
  way for 15 %; the ground is judged once per track, under its start position. Blobs are composited in a
  19×19 patch (past 4.5 sigma: below a quarter of a grey level). Box: 4 sigma square.
* Sprites: glyphs of ``glyph_bank(seed)[part]`` (test by default: handwriting the classifiers never saw,
  when they were trained on the split of the same seed), side uniform in ``scale`` px, contrast in
  [0.3, 0.6] and polarity as ``sprite_images`` draws them, pasted by ``paste_glyphs`` once per track over
  all its frames. Labels come in blocks of ten tracks, each a permutation of the classes, so every digit
  appears once ten tracks have. Standers (and the objects present at the start) keep their whole glyph
  inside the frame. Box: the glyph's square.
* Camera: ``clean`` is the rendered scene quantised to uint8; ``frames`` adds a slow lighting drift
  (gain 1 + ``drift`` × sin(2π t / period + phase), period uniform in [200, 400] frames) and Gaussian
  sensor noise of std ``noise`` (in [0, 1] units) per pixel and frame, then clips and quantises.
* Random streams ``(seed, kind, stream, …)``: background, the objects present at the start, arrivals per
  block of 64 frames, looks per block of ten track ids, lighting, noise. A shorter clip is therefore the
  prefix of a longer one with the same other arguments, and the noise level changes nothing but the noise.
* Speed, measured on one CPU core (taskset, torch single-threaded): a 300-frame 128×128 crowd clip takes
  about 0.45 s for any preset ("busy": about 60 heads at a time, 300 tracks), up to 0.9 s for the first
  one in a process; its ``density(4)`` 0.03 s. A 300-frame 96×96 sprites clip takes about 0.1 s (0.15 s
  the first time, loading the glyphs). Most of the crowd time is compositing heads and the sensor noise.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from qoeflow.data import PARTS
from qoeflow.data.crowd import DENSITY_SIGMA, _gaussians, _photos
from qoeflow.data.sprites import CLASSES, crop_photos, flatten, glyph_bank, paste_glyphs, random_crops

FPS = 25.0  # frames per second stamped on generated clips
KINDS = ("crowd", "sprites")
COLUMNS = ("frame", "id", "label", "x", "y", "w", "h")  # Clip.objects, in this order
INT_COLUMNS = ("frame", "id", "label")
MIN_SIDE = 16  # smallest frame height or width
BLOCK = 64  # frames per arrival block (one random stream each)
LOOKS = 10  # track ids per appearance block (one random stream each; one permutation of the digits)
CALIBRATION = 4096  # simulated border entries used to set the walkers' arrival rate
HEAD_SIGMA = (1.0, 2.0)  # head blob width, pixels (as crowd.render_scene)
HEAD_ALPHA = (0.6, 0.95)
HEAD_FLIP = 0.15  # share of heads with the unusual polarity (bright on bright, dark on dark)
HEAD_RADIUS = 9  # heads are composited in a (2R+1)² patch around their centre
CONTRAST = (0.3, 0.6)  # sprite ink contrast (sprite_images' default)
PERIOD = (200.0, 400.0)  # lighting drift period, frames
STREAMS = {"background": 0, "initial": 1, "arrivals": 2, "looks": 3, "lighting": 4, "noise": 5, "calibration": 6}


def _real(name: str, value: object) -> float:
    """``value`` as a finite float, or a ValueError naming ``name``."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a real number, got {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(number):
        raise ValueError(f"{name} must be a finite real number, got {value!r}")
    return number


def _integer(name: str, value: object, low: int) -> int:
    """``value`` as an int of at least ``low``, or a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class Motion:
    """How much a clip moves: ``objects`` on average, a share ``moving`` walking at about ``speed`` px/frame,
    ``turnover`` objects vanishing (and as many arriving) per 100 frames, besides walkers leaving the frame."""

    objects: int
    moving: float
    speed: float
    turnover: float

    def __post_init__(self) -> None:
        _integer("Motion.objects", self.objects, 0)
        if not 0.0 <= _real("Motion.moving", self.moving) <= 1.0:
            raise ValueError(f"Motion.moving must lie in [0, 1], got {self.moving!r}")
        if _real("Motion.speed", self.speed) < 0.0:
            raise ValueError(f"Motion.speed must be >= 0 (pixels per frame), got {self.speed!r}")
        if not 0.0 <= _real("Motion.turnover", self.turnover) <= 100.0 * self.objects:
            raise ValueError(f"Motion.turnover must lie in [0, 100 × objects] = [0, {100 * self.objects}] "
                             f"(at most every object every frame), got {self.turnover!r}")

    @property
    def hazard(self) -> float:
        """Probability that an object vanishes in a given frame."""
        return self.turnover / (100.0 * self.objects) if self.objects else 0.0


# presets for 128×128 crowd clips: the same 60 people (15 per 64×64, inside the training range), more motion
CROWD_CLIPS: dict[str, Motion] = {
    "still": Motion(objects=60, moving=0.0, speed=0.0, turnover=0.0),
    "calm": Motion(objects=60, moving=0.25, speed=0.5, turnover=4.0),
    "busy": Motion(objects=60, moving=0.8, speed=1.5, turnover=20.0),
}
SPRITES_MOTION = Motion(objects=3, moving=0.7, speed=1.0, turnover=6.0)  # sprites_clip's default


@dataclass(eq=False)
class Clip:
    """A generated clip: ``frames`` and ``clean`` (T, H, W, C) uint8, ground truth ``objects`` (columns
    ``COLUMNS``, one row per visible object per frame, sorted by frame then id), ``fps`` and ``kind``."""

    name: str
    frames: np.ndarray
    clean: np.ndarray
    objects: dict[str, np.ndarray]
    fps: float
    kind: str

    def counts(self) -> np.ndarray:
        """Objects visible per frame: (T,) int64."""
        return np.bincount(self.objects["frame"], minlength=len(self.frames)).astype(np.int64)

    def density(self, stride: int) -> np.ndarray:
        """Crowd density maps (T, 1, H/stride, W/stride) float32: one Gaussian of sigma ``DENSITY_SIGMA``
        (output pixels) per visible head, normalised over the map, so each map sums to its frame's count."""
        if self.kind != "crowd":
            raise ValueError(f"density maps exist for crowd clips only; clip '{self.name}' is {self.kind}")
        stride = _integer("stride", stride, 1)
        steps, height, width, _ = self.frames.shape
        if height % stride or width % stride:
            raise ValueError(f"frame size {height}×{width} is not a multiple of stride {stride}")
        rows, cols = height // stride, width // stride
        order = np.argsort(self.objects["frame"], kind="stable")
        points = np.stack([self.objects["x"], self.objects["y"]], axis=1)[order] / stride
        bounds = np.searchsorted(self.objects["frame"][order], np.arange(steps + 1))
        maps = np.zeros((steps, 1, rows, cols), np.float32)
        for t in np.flatnonzero(np.diff(bounds)):
            here = points[bounds[t]:bounds[t + 1]]
            kernels = _gaussians(here, np.full(len(here), DENSITY_SIGMA), max(rows, cols))[:, :rows, :cols]
            kernels /= kernels.sum(axis=(1, 2), keepdims=True)
            maps[t, 0] = kernels.sum(axis=0)
        return maps


# ----------------------------------------------------------------------------------------------- tracks

def _rng(seed: int, kind: str, stream: str, *more: int) -> np.random.Generator:
    """The random stream ``stream`` of a clip (and of one block, for per-block streams)."""
    return np.random.default_rng([seed, KINDS.index(kind), STREAMS[stream], *more])


def _lifetimes(rng: np.random.Generator, n: int, hazard: float) -> np.ndarray:
    """``n`` geometric lifetimes in frames (>= 1; inf when ``hazard`` is 0), by inverse CDF."""
    u = rng.random(n)
    if hazard <= 0.0:
        return np.full(n, np.inf)
    if hazard >= 1.0:
        return np.ones(n)
    return np.maximum(1.0, np.ceil(np.log1p(-u) / math.log1p(-hazard)))


def _speeds(rng: np.random.Generator, n: int, speed: float) -> np.ndarray:
    """Walking speeds, uniform in [0.5, 1.5] × ``speed``."""
    return rng.uniform(0.5, 1.5, n) * speed


def _entries(rng: np.random.Generator, n: int, height: int, width: int) -> tuple[np.ndarray, ...]:
    """``n`` border entries: position (x, y) on the border and unit direction (dx, dy) into the frame."""
    side = rng.choice(4, size=n, p=np.array([height, height, width, width]) / (2.0 * (height + width)))
    along, sine = rng.random(n), rng.uniform(-1.0, 1.0, n)  # uniform sine: cosine-weighted angle
    normal_x, normal_y = np.array([1.0, -1.0, 0.0, 0.0])[side], np.array([0.0, 0.0, 1.0, -1.0])[side]
    cosine = np.sqrt(1.0 - sine ** 2)
    x = np.select([side == 0, side == 1], [0.0, float(width)], along * width)
    y = np.select([side == 2, side == 3], [0.0, float(height)], along * height)
    return x, y, cosine * normal_x - sine * normal_y, cosine * normal_y + sine * normal_x


def _group(t0: np.ndarray, walk: np.ndarray, enter: np.ndarray, ux: np.ndarray, uy: np.ndarray,
           vx: np.ndarray, vy: np.ndarray, life: np.ndarray) -> dict[str, np.ndarray]:
    """Tracks as columns; ``ux, uy``: place as a share of the free range, or pixels for border entries."""
    return {"t0": np.asarray(t0, np.int64), "walk": walk, "enter": enter, "ux": ux, "uy": uy, "vx": vx, "vy": vy,
            "life": life}


def _initial(rng: np.random.Generator, motion: Motion) -> dict[str, np.ndarray]:
    """The objects present at frame 0: standers then walkers, anywhere, walkers in any direction."""
    n = motion.objects
    walk = np.arange(n) >= n - round(n * motion.moving)
    ux, uy = rng.random(n), rng.random(n)
    angle = rng.uniform(0.0, 2.0 * math.pi, n)
    speed = np.where(walk, _speeds(rng, n, motion.speed), 0.0)
    return _group(np.zeros(n), walk, np.zeros(n, bool), ux, uy, speed * np.cos(angle), speed * np.sin(angle),
                  _lifetimes(rng, n, motion.hazard))


def _walker_rate(seed: int, kind: str, motion: Motion, height: int, width: int) -> float:
    """Walker arrivals per frame that keep about ``objects × moving`` walkers in view."""
    walkers = round(motion.objects * motion.moving)
    if walkers == 0:
        return 0.0
    rng = _rng(seed, kind, "calibration")
    x, y, dx, dy = _entries(rng, CALIBRATION, height, width)
    speed = _speeds(rng, CALIBRATION, motion.speed)
    visible = np.minimum(_lifetimes(rng, CALIBRATION, motion.hazard),
                         np.minimum(_frames_inside(x, speed * dx, width), _frames_inside(y, speed * dy, height)))
    mean = visible.mean()
    return walkers / mean if math.isfinite(mean) else 0.0


def _frames_inside(start: np.ndarray, step: np.ndarray, length: int) -> np.ndarray:
    """Frames k = 0, 1, … with start + step·k in [0, length) before the first outside (inf if never)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ahead = np.where(step > 0, np.ceil((length - start) / step), np.floor(start / -step) + 1)
    return np.where(step == 0, np.inf, ahead)


def _arrivals(rng: np.random.Generator, block: int, motion: Motion, rates: tuple[float, float],
              height: int, width: int) -> dict[str, np.ndarray]:
    """Arrivals in frames [block·BLOCK, (block+1)·BLOCK): standers anywhere, walkers at the border; by frame."""
    standers, walkers = rng.poisson(np.asarray(rates) * BLOCK)
    n = standers + walkers
    t0 = rng.integers(block * BLOCK, (block + 1) * BLOCK, n)
    walk = np.arange(n) >= standers
    ux, uy = rng.random(n), rng.random(n)
    x, y, dx, dy = _entries(rng, n, height, width)
    speed = np.where(walk, _speeds(rng, n, motion.speed), 0.0)
    tracks = _group(t0, walk, walk, np.where(walk, x, ux), np.where(walk, y, uy), speed * dx, speed * dy,
                    _lifetimes(rng, n, motion.hazard))
    order = np.argsort(t0, kind="stable")
    return {k: v[order] for k, v in tracks.items()}


def _tracks(seed: int, kind: str, frames: int, motion: Motion, height: int, width: int) -> dict[str, np.ndarray]:
    """All tracks of a clip, ids = row order (the initial objects, then arrivals by frame)."""
    standers = motion.objects - round(motion.objects * motion.moving)
    rates = (standers * motion.hazard, _walker_rate(seed, kind, motion, height, width))
    groups = [_initial(_rng(seed, kind, "initial"), motion)]
    groups += [_arrivals(_rng(seed, kind, "arrivals", b), b, motion, rates, height, width)
               for b in range(-(-frames // BLOCK))]
    tracks = {k: np.concatenate([g[k] for g in groups]) for k in groups[0]}
    keep = tracks["t0"] < frames
    return {k: v[keep] for k, v in tracks.items()}


def _place(tracks: dict[str, np.ndarray], margin: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Start positions in pixels, inside [0, W) × [0, H); placed objects keep ``margin`` from the border."""
    mx, my = np.minimum(margin, width / 2), np.minimum(margin, height / 2)
    x = np.where(tracks["enter"], tracks["ux"], mx + tracks["ux"] * (width - 2 * mx))
    y = np.where(tracks["enter"], tracks["uy"], my + tracks["uy"] * (height - 2 * my))
    return np.minimum(x, np.nextafter(width, 0)), np.minimum(y, np.nextafter(height, 0))


def _visible(tracks: dict[str, np.ndarray], x0: np.ndarray, y0: np.ndarray, frames: int, height: int,
             width: int) -> tuple[np.ndarray, ...]:
    """One row per visible (track, frame), sorted by frame then track: track, frame, x, y."""
    age = np.arange(frames)[None, :] - tracks["t0"][:, None]
    x = x0[:, None] + tracks["vx"][:, None] * age
    y = y0[:, None] + tracks["vy"][:, None] * age
    seen = (age >= 0) & (age < tracks["life"][:, None]) & (x >= 0) & (x < width) & (y >= 0) & (y < height)
    frame, track = np.nonzero(seen.T)
    return track, frame.astype(np.int64), x[track, frame], y[track, frame]


def _by_track(track: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """(track, its rows) for every track with rows, in track order."""
    order = np.argsort(track, kind="stable")
    ids, starts = np.unique(track[order], return_index=True)
    return list(zip(ids.tolist(), np.split(order, starts[1:])))


def _looks(seed: int, kind: str, n: int, draw: Callable[[np.random.Generator], dict[str, np.ndarray]]
           ) -> dict[str, np.ndarray]:
    """Per-track appearance for ids 0…n-1, drawn by ``draw`` in blocks of LOOKS ids (one stream each)."""
    blocks = [draw(_rng(seed, kind, "looks", b)) for b in range(max(1, -(-n // LOOKS)))]
    return {k: np.concatenate([blk[k] for blk in blocks])[:n] for k in blocks[0]}


def _table(track: np.ndarray, frame: np.ndarray, x: np.ndarray, y: np.ndarray, label: np.ndarray,
           box: np.ndarray) -> dict[str, np.ndarray]:
    """The ground-truth columns from visible rows and per-track label and box side."""
    return {"frame": frame, "id": track.astype(np.int64), "label": label[track].astype(np.int64),
            "x": x.astype(np.float64), "y": y.astype(np.float64), "w": box[track].astype(np.float64),
            "h": box[track].astype(np.float64)}


# ----------------------------------------------------------------------------------------------- camera

def _quantise(image: np.ndarray) -> np.ndarray:
    """[0, 1] floats (clipped) to uint8."""
    return np.rint(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def _camera(image: np.ndarray, seed: int, kind: str, noise: float, drift: float) -> tuple[np.ndarray, np.ndarray]:
    """(frames, clean) uint8 from the rendered (T, H, W, C) float32 scene: drift and noise on ``frames`` only."""
    light = _rng(seed, kind, "lighting")
    period, phase = light.uniform(*PERIOD), light.uniform(0.0, 2.0 * math.pi)
    gain = 1.0 + drift * np.sin(2.0 * math.pi * np.arange(len(image)) / period + phase)
    lit = image * gain.astype(np.float32)[:, None, None, None]
    if noise > 0:
        lit += np.float32(noise) * _rng(seed, kind, "noise").standard_normal(image.shape, dtype=np.float32)
    return _quantise(lit), _quantise(image)


def _check(name: object, frames: object, height: object, width: object, motion: object, seed: object,
           noise: object, drift: object) -> None:
    """ValueError for arguments shared by both generators that are out of range."""
    if not isinstance(name, str):
        raise ValueError(f"name must be a string, got {name!r}")
    _integer("frames", frames, 1)
    _integer("height", height, MIN_SIDE)
    _integer("width", width, MIN_SIDE)
    _integer("seed", seed, 0)
    if not isinstance(motion, Motion):
        raise ValueError(f"motion must be a Motion, got {motion!r}")
    if _real("noise", noise) < 0:
        raise ValueError(f"noise must be >= 0, got {noise!r}")
    if not 0.0 <= _real("drift", drift) < 0.5:
        raise ValueError(f"drift must lie in [0, 0.5), got {drift!r}")


# ------------------------------------------------------------------------------------------------ crowd

def _colour_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A photo crop of the frame's aspect ratio (box height 1-3× ``height``, shrunk to fit), resized to
    height×width, flipped and brightened as ``crowd._background``: (H, W, 3) float32 in [0, 1]."""
    photo = _photos()[rng.integers(len(_photos()))]
    _, photo_h, photo_w = photo.shape
    fit = min(photo_h, photo_w * height / width)  # the tallest box of this aspect ratio inside the photo
    box_h = rng.uniform(min(height, fit), min(3 * height, fit))
    box_h, box_w = min(photo_h, max(1, round(box_h))), min(photo_w, max(1, round(box_h * width / height)))
    top, left = int(rng.integers(0, photo_h - box_h + 1)), int(rng.integers(0, photo_w - box_w + 1))
    crop = photo[:, top:top + box_h, left:left + box_w].unsqueeze(0)
    if (box_h, box_w) != (height, width):
        crop = F.interpolate(crop, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
    image = crop[0].permute(1, 2, 0).numpy()
    if rng.random() < 0.5:
        image = image[:, ::-1]
    if rng.random() < 0.5:
        image = image[::-1]
    return np.clip(image * rng.uniform(0.7, 1.3), 0.0, 1.0).astype(np.float32)


def _head_draw(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The appearance draws of LOOKS heads (both candidate colours; the ground picks one)."""
    return {"sigma": rng.uniform(*HEAD_SIGMA, LOOKS), "alpha": rng.uniform(*HEAD_ALPHA, LOOKS),
            "flip": rng.random(LOOKS) < HEAD_FLIP, "dark": rng.uniform(0.0, 0.15, (LOOKS, 3)),
            "bright": rng.uniform(0.85, 1.0, (LOOKS, 3))}


def _patches(x: np.ndarray, y: np.ndarray, sigma: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Head blobs in (2R+1)² patches: blobs (n, P, P), and the patches' rows and columns in the R-padded frame."""
    side = 2 * HEAD_RADIUS + 1
    col, row = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)  # patch origin, padded coordinates
    blobs = _gaussians(np.stack([x - col + HEAD_RADIUS, y - row + HEAD_RADIUS], axis=1), sigma, side)
    return blobs, row[:, None] + np.arange(side), col[:, None] + np.arange(side)


def _head_colours(background: np.ndarray, x: np.ndarray, y: np.ndarray, looks: dict[str, np.ndarray]) -> np.ndarray:
    """Each head's colour, contrasting with the ground under its start position (the frame only)."""
    pad = ((HEAD_RADIUS, HEAD_RADIUS), (HEAD_RADIUS, HEAD_RADIUS))
    ground = np.pad(background.mean(axis=2), pad)
    inside = np.pad(np.ones(background.shape[:2], np.float32), pad)
    blobs, rows, cols = _patches(x, y, looks["sigma"])
    under = (blobs * ground[rows[:, :, None], cols[:, None, :]]).sum(axis=(1, 2))
    under /= (blobs * inside[rows[:, :, None], cols[:, None, :]]).sum(axis=(1, 2))
    dark = (under > 0.45) ^ looks["flip"]
    return np.where(dark[:, None], looks["dark"], looks["bright"])


def _draw_heads(background: np.ndarray, frames: int, rows: tuple[np.ndarray, ...], looks: dict[str, np.ndarray],
                colours: np.ndarray) -> np.ndarray:
    """The scene (T, H, W, 3) float32: heads alpha-composited over the background, track by track."""
    height, width, _ = background.shape
    r = HEAD_RADIUS
    padded_h, padded_w = height + 2 * r, width + 2 * r
    canvas = np.empty((frames, padded_h, padded_w, 3), np.float32)
    canvas[:] = np.pad(background, ((r, r), (r, r), (0, 0)))
    pixels = canvas.reshape(-1, 3)  # a view: one flat index per pixel gathers and scatters fastest
    track, frame, x, y = rows
    for k, mine in _by_track(track):
        blobs, top, left = _patches(x[mine], y[mine], np.full(len(mine), looks["sigma"][k]))
        where = ((frame[mine][:, None] * padded_h + top)[:, :, None] * padded_w + left[:, None, :]).ravel()
        weight = (looks["alpha"][k] * blobs).astype(np.float32).reshape(-1, 1)
        pixels[where] = pixels[where] * (1.0 - weight) + colours[k].astype(np.float32) * weight
    return canvas[:, r:r + height, r:r + width]


def crowd_clip(name: str, frames: int = 200, height: int = 128, width: int = 128, motion: Motion = CROWD_CLIPS["calm"],
               seed: int = 0, noise: float = 0.02, drift: float = 0.05) -> Clip:
    """A colour clip of heads (``crowd.render_scene``'s) moving over one photo crop; see the module notes."""
    _check(name, frames, height, width, motion, seed, noise, drift)
    background = _colour_background(_rng(seed, "crowd", "background"), height, width)
    tracks = _tracks(seed, "crowd", frames, motion, height, width)
    looks = _looks(seed, "crowd", len(tracks["t0"]), _head_draw)
    x0, y0 = _place(tracks, np.zeros(len(tracks["t0"])), height, width)
    colours = _head_colours(background, x0, y0, looks)
    rows = _visible(tracks, x0, y0, frames, height, width)
    image = _draw_heads(background, frames, rows, looks, colours)
    video, clean = _camera(image, seed, "crowd", noise, drift)
    objects = _table(*rows, np.full(len(x0), -1), 4.0 * looks["sigma"])
    return Clip(name, video, clean, objects, FPS, "crowd")


# ---------------------------------------------------------------------------------------------- sprites

def _classes(classes: Sequence[int] | None) -> np.ndarray:
    """The digits a sprites clip shows, checked: distinct integers in [0, CLASSES)."""
    if classes is None:
        return np.arange(CLASSES)
    values = list(classes)
    if not values or len(set(values)) != len(values) or any(
            isinstance(c, bool) or not isinstance(c, (int, np.integer)) or not 0 <= c < CLASSES for c in values):
        raise ValueError(f"classes must be distinct digits in [0, {CLASSES}), at least one, got {classes!r}")
    return np.asarray(values, np.int64)


def _grey_background(rng: np.random.Generator, height: int, width: int, texture: float) -> torch.Tensor:
    """A grey photo crop (square at the larger side, cut to H×W), flattened: (1, 1, H, W) float32."""
    side = max(height, width)
    return flatten(crop_photos(**random_crops(rng, 1, side), size=side)[:, :, :height, :width], texture)


def _sprite_draw(rng: np.random.Generator, scale: tuple[float, float]) -> dict[str, np.ndarray]:
    """The appearance draws of LOOKS sprites: one of each class, as ``sprite_images`` draws them."""
    return {"label": rng.permutation(CLASSES), "pick": rng.random(LOOKS), "side": rng.uniform(*scale, LOOKS),
            "contrast": rng.uniform(*CONTRAST, LOOKS), "polarity": np.where(rng.random(LOOKS) < 0.5, 1.0, -1.0)}


def _glyph_index(labels: torch.Tensor, label: np.ndarray, pick: np.ndarray) -> torch.Tensor:
    """Position in the bank of glyph ``pick`` (a share in [0, 1)) of each ``label``'s glyphs."""
    per_class = np.bincount(labels.numpy(), minlength=CLASSES)
    if (per_class == 0).any():
        raise ValueError(f"the glyph bank lacks classes {np.flatnonzero(per_class == 0).tolist()}")
    starts = np.concatenate([[0], np.cumsum(per_class)[:-1]])
    order = torch.argsort(labels, stable=True)
    return order[torch.from_numpy(starts[label] + (pick * per_class[label]).astype(np.int64))]


def _draw_sprites(canvas: torch.Tensor, frames: int, rows: tuple[np.ndarray, ...], glyphs: torch.Tensor,
                  looks: dict[str, np.ndarray]) -> np.ndarray:
    """The scene (T, H, W, 1) float32: each track's glyph pasted over all its frames at once."""
    video = canvas.expand(frames, -1, -1, -1).clone()
    track, frame, x, y = rows
    for k, mine in _by_track(track):
        n, side = len(mine), float(looks["side"][k])
        at = torch.from_numpy(frame[mine])
        video[at] = paste_glyphs(video[at], glyphs[k].expand(n, -1, -1), torch.from_numpy(y[mine] - side / 2),
                                 torch.from_numpy(x[mine] - side / 2), torch.full((n,), side),
                                 torch.full((n,), float(looks["contrast"][k])),
                                 torch.full((n,), float(looks["polarity"][k])))
    return video.permute(0, 2, 3, 1).numpy()


def sprites_clip(name: str, frames: int = 200, height: int = 96, width: int = 96, motion: Motion = SPRITES_MOTION,
                 seed: int = 0, noise: float = 0.04, drift: float = 0.05, scale: tuple[float, float] = (16.0, 28.0),
                 part: str = "test", texture: float = 0.2, glyph_seed: int | None = None,
                 classes: Sequence[int] | None = None) -> Clip:
    """A grey clip of digit glyphs (``glyph_bank(glyph_seed)[part]``; ``glyph_seed`` defaults to ``seed``) moving
    over one flattened photo crop. Pass the classifiers' data seed as ``glyph_seed`` so that the test glyphs are
    ones they never saw, whatever the clip's own seed. ``classes``: the digits that appear (default all ten);
    each block of ten tracks maps its permutation of the ten onto them (label mod their number), so their
    counts differ by at most one per block and everything else about the clip stays as with all ten."""
    _check(name, frames, height, width, motion, seed, noise, drift)
    if part not in PARTS:
        raise ValueError(f"unknown part {part!r} (allowed: {', '.join(PARTS)})")
    try:
        low, high = (_real("scale", s) for s in scale)
    except (TypeError, ValueError):
        raise ValueError(f"scale must be a pair (min, max) of glyph sides in pixels, got {scale!r}") from None
    if not 0.0 < low <= high:
        raise ValueError(f"scale must satisfy 0 < min <= max (pixels), got {scale!r}")
    if not 0.0 <= _real("texture", texture) <= 1.0:
        raise ValueError(f"texture must lie in [0, 1], got {texture!r}")
    subset = _classes(classes)
    bank_glyphs, bank_labels, _ = glyph_bank(seed if glyph_seed is None else glyph_seed)[part]
    canvas = _grey_background(_rng(seed, "sprites", "background"), height, width, texture)
    tracks = _tracks(seed, "sprites", frames, motion, height, width)
    looks = _looks(seed, "sprites", len(tracks["t0"]), lambda rng: _sprite_draw(rng, (low, high)))
    looks["label"] = subset[looks["label"] % len(subset)]
    glyphs = bank_glyphs[_glyph_index(bank_labels, looks["label"], looks["pick"])]
    x0, y0 = _place(tracks, looks["side"] / 2, height, width)
    rows = _visible(tracks, x0, y0, frames, height, width)
    image = _draw_sprites(canvas, frames, rows, glyphs, looks)
    video, clean = _camera(image, seed, "sprites", noise, drift)
    return Clip(name, video, clean, _table(*rows, looks["label"], looks["side"]), FPS, "sprites")


# ------------------------------------------------------------------------------------------------- files

def _validate(clip: Clip, source: object) -> None:
    """ValueError naming ``source`` unless the clip's arrays are consistent."""
    def fail(why: str) -> None:
        raise ValueError(f"clip {source}: {why}")

    if clip.kind not in KINDS:
        fail(f"unknown kind {clip.kind!r} (allowed: {', '.join(KINDS)})")
    if not (math.isfinite(clip.fps) and clip.fps > 0):
        fail(f"fps must be positive, got {clip.fps!r}")
    channels = 3 if clip.kind == "crowd" else 1
    if clip.frames.dtype != np.uint8 or clip.frames.ndim != 4 or clip.frames.shape[-1] != channels \
            or clip.frames.shape[0] < 1:
        fail(f"frames must be (T, H, W, {channels}) uint8 for a {clip.kind} clip, got {clip.frames.shape} "
             f"{clip.frames.dtype}")
    if clip.clean.shape != clip.frames.shape or clip.clean.dtype != np.uint8:
        fail(f"clean {clip.clean.shape} {clip.clean.dtype} does not match frames {clip.frames.shape} uint8")
    missing = [c for c in COLUMNS if c not in clip.objects]
    if missing:
        fail(f"objects lack columns {missing}")
    lengths = {c: clip.objects[c].shape for c in COLUMNS}
    if any(len(s) != 1 for s in lengths.values()) or len({s[0] for s in lengths.values()}) != 1:
        fail(f"objects columns must be 1-D of equal length, got shapes {lengths}")
    steps, height, width, _ = clip.frames.shape
    frame, x, y = clip.objects["frame"], clip.objects["x"], clip.objects["y"]
    if len(frame) and (frame.min() < 0 or frame.max() >= steps or x.min() < 0 or x.max() >= width
                       or y.min() < 0 or y.max() >= height):
        fail(f"objects lie outside the {steps} frames of {height}×{width}")


def save_clip(clip: Clip, path: str | os.PathLike) -> None:
    """Write ``clip`` to one compressed .npz file at exactly ``path`` (atomically: temporary file, rename)."""
    path = Path(path)
    _validate(clip, path)
    arrays = {"name": np.array(clip.name), "kind": np.array(clip.kind), "fps": np.array(float(clip.fps)),
              "frames": clip.frames, "clean": clip.clean, **{f"objects_{c}": clip.objects[c] for c in COLUMNS}}
    handle = tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False)
    try:
        with handle:
            np.savez_compressed(handle, **arrays)
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise


def load_clip(path: str | os.PathLike) -> Clip:
    """Read a clip written by ``save_clip``; ValueError naming the file if it is missing, empty, corrupt,
    truncated, lacks arrays or holds inconsistent ones."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"clip file {path} does not exist")
    if path.stat().st_size == 0:
        raise ValueError(f"clip file {path} is empty")
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError("not an .npz archive")
        with data:
            arrays = {k: data[k] for k in data.files}
    except Exception as exc:  # any failure to parse the archive (zip, zlib, npy header, ...)
        raise ValueError(f"clip file {path} is corrupt or truncated ({type(exc).__name__}: {exc})") from exc
    needed = ["name", "kind", "fps", "frames", "clean", *(f"objects_{c}" for c in COLUMNS)]
    missing = [k for k in needed if k not in arrays]
    if missing:
        raise ValueError(f"clip file {path} lacks arrays {missing}")
    scalars = {k: arrays[k] for k in ("name", "kind", "fps")}
    if any(v.shape != () for v in scalars.values()) or scalars["fps"].dtype.kind not in "fiu" \
            or scalars["name"].dtype.kind != "U" or scalars["kind"].dtype.kind != "U":
        raise ValueError(f"clip file {path}: name, kind and fps must be a string, a string and a number")
    objects = {c: arrays[f"objects_{c}"] for c in COLUMNS}
    if any(objects[c].dtype.kind not in "iu" for c in INT_COLUMNS) or any(objects[c].dtype.kind not in "fiu"
                                                                           for c in COLUMNS):
        raise ValueError(f"clip file {path}: objects columns frame, id, label must be integers, the rest numbers")
    objects = {c: v.astype(np.int64 if c in INT_COLUMNS else np.float64) for c, v in objects.items()}
    clip = Clip(str(scalars["name"]), arrays["frames"], arrays["clean"], objects, float(scalars["fps"]),
                str(scalars["kind"]))
    _validate(clip, path)
    return clip


__all__ = ["Clip", "Motion", "CROWD_CLIPS", "SPRITES_MOTION", "FPS", "crowd_clip", "sprites_clip", "save_clip",
           "load_clip"]
