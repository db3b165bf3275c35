"""Video clips: determinism, camera model, ground truth consistent with the pixels, motion, files, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from qoeflow.data.video import (CROWD_CLIPS, COLUMNS, Clip, Motion, crowd_clip, load_clip, save_clip,
                                sprites_clip)

SMALL = dict(frames=40, height=64, width=64)
BUSY = Motion(objects=12, moving=0.8, speed=1.5, turnover=20.0)
STILL = Motion(objects=12, moving=0.0, speed=0.0, turnover=0.0)


@pytest.fixture(scope="module")
def crowd() -> Clip:
    return crowd_clip("crowd", motion=BUSY, seed=1, **SMALL)


@pytest.fixture(scope="module")
def sprites() -> Clip:
    return sprites_clip("sprites", motion=Motion(objects=4, moving=0.7, speed=1.0, turnover=10.0), seed=2, **SMALL)


def _same(a: Clip, b: Clip) -> bool:
    return (a.name == b.name and a.kind == b.kind and a.fps == b.fps and np.array_equal(a.frames, b.frames)
            and np.array_equal(a.clean, b.clean) and a.objects.keys() == b.objects.keys()
            and all(np.array_equal(a.objects[k], b.objects[k]) and a.objects[k].dtype == b.objects[k].dtype
                    for k in a.objects))


def test_deterministic_seeded_and_prefix_stable(crowd, sprites):
    assert _same(crowd, crowd_clip("crowd", motion=BUSY, seed=1, **SMALL))
    assert _same(sprites, sprites_clip("sprites", motion=Motion(4, 0.7, 1.0, 10.0), seed=2, **SMALL))
    other = crowd_clip("crowd", motion=BUSY, seed=2, **SMALL)
    assert not np.array_equal(other.clean, crowd.clean)
    renamed = crowd_clip("other name", motion=BUSY, seed=1, **SMALL)  # the name is only a label
    assert np.array_equal(renamed.frames, crowd.frames) and renamed.name == "other name"
    short = crowd_clip("crowd", motion=BUSY, seed=1, frames=25, height=64, width=64)
    assert np.array_equal(short.frames, crowd.frames[:25])
    cut = crowd.objects["frame"] < 25
    assert all(np.array_equal(short.objects[k], crowd.objects[k][cut]) for k in COLUMNS)


def test_shapes_and_dtypes(crowd, sprites):
    for clip, channels in ((crowd, 3), (sprites, 1)):
        assert clip.frames.shape == clip.clean.shape == (40, 64, 64, channels)
        assert clip.frames.dtype == clip.clean.dtype == np.uint8
        assert list(clip.objects) == list(COLUMNS)
        assert len({len(v) for v in clip.objects.values()}) == 1
        for k in COLUMNS:
            assert clip.objects[k].dtype == (np.int64 if k in ("frame", "id", "label") else np.float64)
        assert clip.fps > 0 and clip.counts().dtype == np.int64 and clip.counts().shape == (40,)
    assert crowd.kind == "crowd" and sprites.kind == "sprites"
    wide = crowd_clip("wide", frames=3, height=32, width=80, motion=STILL)
    assert wide.frames.shape == (3, 32, 80, 3) and wide.frames.std() > 5


def test_clean_differs_by_noise_and_drift_only(crowd):
    diff = np.abs(crowd.frames.astype(np.int16) - crowd.clean)
    assert 0 < diff.mean() < 0.06 * 255  # noise 0.02 plus drift up to 5 %
    plain = crowd_clip("crowd", motion=BUSY, seed=1, noise=0.0, drift=0.0, **SMALL)
    assert np.array_equal(plain.frames, plain.clean) and np.array_equal(plain.clean, crowd.clean)
    drift_only = crowd_clip("crowd", motion=BUSY, seed=1, noise=0.0, drift=0.3, **SMALL)
    ratio = drift_only.frames.reshape(40, -1).mean(1) / crowd.clean.reshape(40, -1).mean(1)
    assert 0.65 < ratio.min() and ratio.max() < 1.35 and ratio.max() - ratio.min() > 0.01
    noisy = crowd_clip("crowd", motion=BUSY, seed=1, noise=0.1, drift=0.0, **SMALL)
    residual = noisy.frames.astype(np.float64) - noisy.clean
    assert abs(residual.mean()) < 2 and 20 < residual.std() < 30  # clipping trims the 25.5 a little


def test_still_clip_is_static_and_busy_is_not(crowd):
    for clip in (crowd_clip("s", motion=STILL, **SMALL), sprites_clip("s", motion=Motion(4, 0.0, 0.0, 0.0), **SMALL)):
        assert (clip.clean == clip.clean[:1]).all()
        assert (clip.counts() == clip.counts()[0]).all() and clip.counts()[0] > 0
        assert not np.array_equal(clip.frames[0], clip.frames[1])  # noise still differs
    assert not np.array_equal(crowd.clean[0], crowd.clean[-1])
    assert len(np.unique(crowd.objects["id"])) > 12  # objects left and others arrived
    assert (crowd_clip("s", motion=CROWD_CLIPS["still"], frames=4).counts() == 60).all()


def test_objects_inside_and_counts_match(crowd, sprites):
    for clip in (crowd, sprites):
        objects, (steps, height, width, _) = clip.objects, clip.frames.shape
        assert (objects["x"] >= 0).all() and (objects["x"] < width).all()
        assert (objects["y"] >= 0).all() and (objects["y"] < height).all()
        assert (objects["frame"] >= 0).all() and (objects["frame"] < steps).all()
        assert np.array_equal(clip.counts(), np.bincount(objects["frame"], minlength=steps))
        pairs = objects["frame"] * 10_000 + objects["id"]
        assert len(np.unique(pairs)) == len(pairs) and (np.diff(pairs) > 0).all()  # sorted, one row per object
        for track in np.unique(objects["id"]):  # a track is seen in consecutive frames, with one look
            mine = objects["id"] == track
            assert (np.diff(objects["frame"][mine]) == 1).all()
            assert len(np.unique(objects["label"][mine])) == 1 and len(np.unique(objects["w"][mine])) == 1
    assert (crowd.objects["label"] == -1).all()
    assert (crowd.objects["w"] >= 4.0).all() and (crowd.objects["w"] <= 8.0).all()
    assert (crowd.objects["w"] == crowd.objects["h"]).all()
    assert 6 <= crowd.counts().mean() <= 18  # about Motion.objects


def test_heads_are_drawn_where_listed():
    one = crowd_clip("one", frames=1, height=32, width=32, motion=Motion(1, 0.0, 0.0, 0.0), noise=0.0, drift=0.0)
    empty = crowd_clip("one", frames=1, height=32, width=32, motion=Motion(0, 0.0, 0.0, 0.0), noise=0.0, drift=0.0)
    changed = np.abs(one.clean.astype(np.int16) - empty.clean).max(axis=-1)[0]
    y, x = np.unravel_index(np.argmax(changed), changed.shape)
    assert changed.max() > 40
    assert abs(x + 0.5 - one.objects["x"][0]) <= 1 and abs(y + 0.5 - one.objects["y"][0]) <= 1


def test_density_sums_to_counts(crowd, sprites):
    density = crowd.density(4)
    assert density.shape == (40, 1, 16, 16) and density.dtype == np.float32
    assert np.allclose(density.sum(axis=(1, 2, 3)), crowd.counts(), atol=1e-3)
    assert crowd_clip("w", frames=2, height=32, width=48, motion=STILL).density(8).shape == (2, 1, 4, 6)
    with pytest.raises(ValueError, match="multiple"):
        crowd.density(5)
    with pytest.raises(ValueError, match="crowd"):
        sprites.density(4)


def test_sprite_labels_cover_the_digits(sprites):
    assert ((sprites.objects["label"] >= 0) & (sprites.objects["label"] <= 9)).all()
    assert (sprites.objects["w"] >= 16).all() and (sprites.objects["w"] <= 28).all()
    long = sprites_clip("long", frames=150, height=48, width=48, motion=Motion(4, 1.0, 2.0, 20.0), noise=0.0)
    assert len(np.unique(long.objects["id"])) >= 10
    assert set(long.objects["label"].tolist()) == set(range(10))
    assert long.clean.std() > 10  # glyphs and texture, not a flat image


def test_tracks_move_at_about_their_speed():
    clip = crowd_clip("walk", motion=Motion(objects=10, moving=1.0, speed=1.0, turnover=0.0), **SMALL)
    steps = []
    for track in np.unique(clip.objects["id"]):
        mine = clip.objects["id"] == track
        step = np.hypot(np.diff(clip.objects["x"][mine]), np.diff(clip.objects["y"][mine]))
        if len(step):
            assert np.allclose(step, step[0])  # constant velocity
            steps.append(step[0])
    assert len(steps) >= 10 and 0.5 - 1e-9 <= min(steps) and max(steps) <= 1.5 + 1e-9
    standing = crowd_clip("stand", motion=STILL, **SMALL).objects
    assert all(len(np.unique(standing["x"][standing["id"] == t])) == 1 for t in np.unique(standing["id"]))


def test_save_load_round_trip(tmp_path, crowd, sprites):
    for clip in (crowd, sprites):
        path = tmp_path / f"{clip.kind}.clip"  # no .npz suffix: written at exactly this path
        save_clip(clip, path)
        assert path.is_file() and sorted(p.name for p in tmp_path.iterdir()) == sorted(
            {f"{clip.kind}.clip", "crowd.clip"})
        assert _same(load_clip(path), clip) and _same(load_clip(str(path)), clip)


def test_load_rejects_bad_files(tmp_path, crowd):
    missing = tmp_path / "missing.npz"
    with pytest.raises(ValueError, match="missing.npz"):
        load_clip(missing)
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty.npz.*empty"):
        load_clip(empty)
    whole = tmp_path / "whole.npz"
    save_clip(crowd, whole)
    data = whole.read_bytes()
    half = tmp_path / "half.npz"
    half.write_bytes(data[:len(data) // 2])
    with pytest.raises(ValueError, match="half.npz.*corrupt or truncated"):
        load_clip(half)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a clip at all")
    with pytest.raises(ValueError, match="garbage.npz"):
        load_clip(garbage)
    arrays = dict(np.load(whole))
    lacking = tmp_path / "lacking.npz"
    np.savez(lacking, **{k: v for k, v in arrays.items() if k != "clean"})
    with pytest.raises(ValueError, match="lacking.npz.*clean"):
        load_clip(lacking)
    odd = tmp_path / "odd.npz"
    np.savez(odd, **{**arrays, "clean": arrays["clean"][:, :10]})
    with pytest.raises(ValueError, match="odd.npz.*does not match"):
        load_clip(odd)
    ragged = tmp_path / "ragged.npz"
    np.savez(ragged, **{**arrays, "objects_x": arrays["objects_x"][:-1]})
    with pytest.raises(ValueError, match="ragged.npz.*equal length"):
        load_clip(ragged)


@pytest.mark.parametrize("kwargs, match", [
    (dict(frames=0), "frames"), (dict(height=15), "height"), (dict(width=8), "width"), (dict(noise=-0.1), "noise"),
    (dict(drift=0.5), "drift"), (dict(drift=-0.01), "drift"), (dict(seed=-1), "seed"), (dict(frames=2.5), "frames"),
    (dict(motion="busy"), "Motion"), (dict(noise=float("nan")), "noise"),
])
def test_bad_arguments(kwargs, match):
    for make in (crowd_clip, sprites_clip):
        with pytest.raises(ValueError, match=match):
            make("bad", **{"frames": 2, **kwargs})


def test_bad_motion_and_sprite_options():
    for fields, match in [((-1, 0.5, 1.0, 0.0), "objects"), ((5, 1.5, 1.0, 0.0), "moving"),
                          ((5, 0.5, -1.0, 0.0), "speed"), ((5, 0.5, 1.0, -1.0), "turnover"),
                          ((5, 0.5, 1.0, 501.0), "turnover"), ((2.5, 0.5, 1.0, 0.0), "objects"),
                          ((5, "x", 1.0, 0.0), "moving")]:
        with pytest.raises(ValueError, match=match):
            Motion(*fields)
    for kwargs, match in [(dict(part="holdout"), "part"), (dict(scale=(0.0, 10.0)), "scale"),
                          (dict(scale=(20.0, 10.0)), "scale"), (dict(scale=5.0), "scale"),
                          (dict(texture=1.5), "texture")]:
        with pytest.raises(ValueError, match=match):
            sprites_clip("bad", frames=2, **kwargs)


def test_glyph_seed_picks_the_glyph_bank_and_leaves_the_motion_alone(sprites):
    """Issue 10 indexes clips whose glyphs the classifiers never saw: the bank follows `glyph_seed`, the
    tracks and their labels follow the clip's seed."""
    motion = Motion(4, 0.7, 1.0, 10.0)
    same = sprites_clip("sprites", motion=motion, seed=2, glyph_seed=2, **SMALL)
    other = sprites_clip("sprites", motion=motion, seed=2, glyph_seed=5, **SMALL)
    assert _same(sprites, same)
    assert all(np.array_equal(sprites.objects[k], other.objects[k]) for k in sprites.objects)
    assert not np.array_equal(sprites.clean, other.clean)
