"""Sprites: determinism, balance, disjoint glyphs per part, the primitives, and that it is harder than digits."""

from __future__ import annotations

import inspect
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from qoeflow.data import Split, load_split
from qoeflow.data.digits import digits_split, stratified_parts
from qoeflow.data.sprites import crop_photos, glyph_bank, paste_glyphs, sprite_images, sprites_split

REPO = Path(__file__).resolve().parents[1]
SMALL = dict(n_train=200, n_val=50, n_test=50, seed=3)


@pytest.fixture(scope="module")
def sprites() -> Split:
    return sprites_split(**SMALL)


def test_shapes_types_range_and_balance(sprites):
    for name, n in zip(("train", "val", "test"), (200, 50, 50)):
        x, y = sprites.part(name)
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.shape == (n, 1, 32, 32) and y.shape == (n,)
        assert 0.0 <= x.min() and x.max() <= 1.0 and x.std() > 0.05
        assert (torch.bincount(y, minlength=10) == n // 10).all()
    assert sprites.task == "sprites" and sprites.counts == {}
    odd = sprites_split(n_train=23, n_val=10, n_test=10, size=16)
    assert odd.x_train.shape == (23, 1, 16, 16)
    counts = torch.bincount(odd.y_train, minlength=10)
    assert counts.max() - counts.min() <= 1


def test_deterministic_by_seed_and_prefix_stable(sprites):
    again = sprites_split(**SMALL)
    for name in ("train", "val", "test"):
        assert torch.equal(sprites.part(name)[0], again.part(name)[0])
        assert torch.equal(sprites.part(name)[1], again.part(name)[1])
    other = sprites_split(**{**SMALL, "seed": 4})
    assert not torch.equal(sprites.x_train, other.x_train)
    longer = sprites_split(**{**SMALL, "n_train": 215})  # a part's size changes none of its other images
    assert torch.equal(longer.x_train[:200], sprites.x_train) and torch.equal(longer.x_test, sprites.x_test)


def test_parts_use_disjoint_glyphs_of_the_digits_split():
    from sklearn.datasets import load_digits

    bank = glyph_bank(3)
    expected = stratified_parts(load_digits().target, (0.2, 0.2), 3)
    for (name, (glyphs, labels, index)), want in zip(bank.items(), expected):
        assert np.array_equal(index.numpy(), want) and len(glyphs) == len(labels) == len(want)
    used = {}
    for part, name in enumerate(("train", "test")):
        glyphs, labels, index = bank[name]
        _, y, chosen = sprite_images(300, glyphs, labels, seed=3, part=part)
        assert torch.equal(y, labels[chosen])
        used[name] = set(index[chosen].tolist())
    assert used["train"] and used["test"] and not used["train"] & used["test"]
    assert not set(bank["train"][2].tolist()) & set(bank["test"][2].tolist())


def test_paste_polarity_and_contrast():
    canvas = torch.tensor([0.5, 0.5, 0.9]).reshape(3, 1, 1, 1).expand(3, 1, 16, 16).clone()
    glyphs = torch.ones(3, 8, 8)
    out = paste_glyphs(canvas, glyphs, top=torch.full((3,), 2.0), left=torch.full((3,), 2.0),
                       side=torch.full((3,), 12.0), contrast=torch.full((3,), 0.3),
                       polarity=torch.tensor([1.0, -1.0, 1.0]))
    centre = out[:, 0, 8, 8]
    torch.testing.assert_close(centre, torch.tensor([0.8, 0.2, 0.6]))  # 0.9 + 0.3 leaves [0, 1]: darker instead
    assert torch.equal(out[:, :, 0, 0], canvas[:, :, 0, 0])  # outside the glyph's box: untouched


def test_mirrored_crop_is_the_flipped_crop():
    box = dict(photo=np.array([0, 1]), top=np.array([10.0, 100.5]), left=np.array([30.0, 200.25]),
               side=np.array([64.0, 90.0]))
    plain = crop_photos(**box, mirror=np.array([False, False]), size=24)
    mirrored = crop_photos(**box, mirror=np.array([True, True]), size=24)
    assert plain.shape == (2, 1, 24, 24) and 0 <= plain.min() and plain.max() <= 1
    torch.testing.assert_close(mirrored, plain.flip(-1))


@pytest.mark.filterwarnings("ignore:self.within_class_std_dev_")  # digits' constant corner pixels
def test_harder_than_digits_for_a_linear_baseline(sprites):
    from sklearn.neighbors import NearestCentroid

    def score(split: Split) -> float:
        flat = lambda x: x.reshape(len(x), -1).numpy()  # noqa: E731
        model = NearestCentroid().fit(flat(split.x_train), split.y_train.numpy())
        return model.score(flat(split.x_test), split.y_test.numpy())

    digits, sprites_ = score(digits_split()), score(sprites_split(n_train=600, n_val=10, n_test=300))
    assert digits > 0.85 and sprites_ < digits - 0.4 and sprites_ < 0.45


def test_generation_is_fast():
    sprites_split(n_train=10, n_val=10, n_test=10)  # warm the photo and glyph caches
    start = time.perf_counter()
    split = sprites_split(n_train=2000, n_val=500, n_test=500)
    assert time.perf_counter() - start < 5.0 and len(split.x_train) == 2000


def test_family_models_and_loader(sprites):
    from qoeflow.families import FAMILIES, SpritesData
    from qoeflow.models import MODELS, build_model, input_shape

    fam = FAMILIES["sprites"]
    assert fam.models == FAMILIES["digits"].models == MODELS["sprites"]
    assert fam.metrics == FAMILIES["digits"].metrics and fam.kind == "classification"
    assert input_shape("sprites") == (1, 32, 32)
    torch.manual_seed(0)
    out = build_model("sprites", "vgg")(sprites.x_val[:4])
    assert out.shape == (4, 10) and torch.isfinite(out).all()
    defaults = {k: p.default for k, p in inspect.signature(sprites_split).parameters.items()}
    assert SpritesData().model_dump() == defaults  # the settings are the generator's keyword arguments
    assert torch.equal(load_split("sprites", **SMALL).x_val, sprites.x_val)


def test_params_with_a_sprites_job_validate():
    from qoeflow.params import ParamsError, apply_set, read_params_file, validate_params

    tree = read_params_file(REPO / "params.yaml")
    tree["train"]["jobs"].append({"name": "sprites-vgg-check", "task": "sprites", "model": "vgg", "epochs": 10})
    params = validate_params(tree)
    assert params.train.data.sprites.n_train >= 1000 and params.forecast.metrics["sprites"] == ["val_loss", "error"]
    assert params.qoe.metrics["sprites"] == ["error"]
    with pytest.raises(ParamsError, match=r"train.data.sprites.scale_min"):
        validate_params(apply_set(tree, "train.data.sprites.scale_min=0"))
    with pytest.raises(ParamsError, match=r"contrast_min .* must not exceed contrast_max"):
        validate_params(apply_set(tree, "train.data.sprites.contrast_min=0.9"))
    with pytest.raises(ParamsError, match=r"unknown model 'unet' for task 'sprites'"):
        validate_params(apply_set(tree, f"train.jobs.{len(tree['train']['jobs']) - 1}.model=unet"))
