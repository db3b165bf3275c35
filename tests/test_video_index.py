"""Focus-style video indexing (qoeflow/lifecycle/video_index.py, qoeflow/models/video_run.py): objects found where
the generator put them, a tiny clip indexed and queried with known answers, the cheapest configuration chosen,
clusters and thresholds doing what they promise, and bad input refused by name."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qoeflow.data.video import Motion, sprites_clip
from qoeflow.lifecycle import finetune
from qoeflow.lifecycle import video_index as vi
from qoeflow.lifecycle.multiexit import MultiExitNet
from qoeflow.models import video_run as vr
from qoeflow.models.digits import resnet
from qoeflow.models.exits import ExitModel

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def walkers():
    """Two walking sprites at a time (3s and 7s) for 120 frames, no other departures."""
    return sprites_clip("walkers", frames=120, height=96, width=96, seed=4, glyph_seed=0, classes=[3, 7],
                        motion=Motion(objects=2, moving=1.0, speed=1.0, turnover=0.0))


@pytest.fixture(scope="module")
def net():
    """A small multi-exit network over a ResNet trained briefly on sprites."""
    from qoeflow.data.sprites import sprites_split

    split = sprites_split(n_train=600, n_val=200, n_test=10, seed=0)
    torch.manual_seed(0)
    base = resnet()
    finetune.fit(base, split.x_train, split.y_train, epochs=2, lr=3e-3, seed=0)
    return MultiExitNet(base.eval(), [0, 1, 2, 3]).eval(), split


def _touching(boxes: dict, clip) -> np.ndarray:
    """Per detected object: the generator's objects of that frame whose glyph box its box overlaps."""
    o, half = clip.objects, clip.objects["w"] / 2
    return np.array([((o["frame"] == t) & (o["x"] + half > x) & (o["x"] - half < x + w) & (o["y"] + half > y)
                      & (o["y"] - half < y + h)).sum() for t, x, y, w, h in zip(*(boxes[c] for c in vi.BOX_COLUMNS))])


def test_detection_finds_the_walking_objects(walkers):
    boxes = vi.detect(walkers.frames)
    assert (_touching(boxes, walkers) >= 1).all()  # every object lies on one the generator drew: no ghost, no noise
    o, half = walkers.objects, walkers.objects["w"] / 2
    whole = (o["x"] - half > 1) & (o["x"] + half < 95) & (o["y"] - half > 1) & (o["y"] + half < 95)
    found = [((boxes["frame"] == t) & (boxes["x"] <= x) & (x < boxes["x"] + boxes["w"]) & (boxes["y"] <= y)
              & (y < boxes["y"] + boxes["h"])).any() for t, x, y in zip(o["frame"][whole], o["x"][whole], o["y"][whole])]
    # most objects wholly inside the frame are found; the rest are faint (ink contrast 0.3-0.6 of the background
    # against sensor noise) or merged with a neighbour whose box then holds both
    assert np.mean(found) >= 0.6
    crops = vi.crops(walkers.frames, boxes)
    assert crops.shape == (len(boxes["frame"]), 1, 32, 32) and 0 <= crops.min() <= crops.max() <= 1


def test_a_tiny_clip_is_indexed_and_queried_with_known_answers(walkers, net):
    model, _ = net
    boxes = vi.detect(walkers.frames)
    x = vi.crops(walkers.frames, boxes)
    gt = ExitModel(model, 3)  # the network's own last exit plays the GT-CNN: the index must reproduce its answers
    labels = vr.predict(gt, x)
    config = vi.IngestConfig((3,), 1, 1.0, 1.0, 0, 0.0)
    result = vr.ingest(model, x, config, max_clusters=10, radius=0.3)
    # every object indexed once (top-1), in a cluster of its own label, whose centroid is a member
    assert result.inserts == len(x) == sum(len(c.members) for c in result.clusters)
    assert len(result.clusters) < len(x) / 3  # a walker's crops look alike: clusters gather them
    for c in result.clusters:
        assert c.centroid in c.members and set(labels[list(c.members)]) == {c.label}
    for label in range(10):
        reference = set(boxes["frame"][labels == label].tolist())
        confirmed = vr.confirm("focus", label, x[[c.centroid for c in result.clusters if c.label == label]], gt)
        frames = {boxes["frame"][m] for c, ok in zip([c for c in result.clusters if c.label == label],
                                                     confirmed.confirmed) if ok for m in c.members}
        assert vi.precision_recall(frames, reference) == (1.0, 1.0)


def test_the_cheapest_configuration_that_reaches_the_recall_target_is_chosen():
    # exit 0 is right half of the time, exit 1 always; exit 1 costs ten times as much
    labels = np.arange(8) % 4
    right = torch.nn.functional.one_hot(torch.from_numpy(labels), 4).float() * 5
    wrong = torch.roll(right, 1, dims=1)
    half = torch.where(torch.arange(8)[:, None] % 2 == 0, right, wrong + right * 0.5)
    logits = [half, right]
    macs = {(0,): 10, (1,): 100, (0, 1): 105}
    cheap = vi.choose_config(logits, labels, macs, single=True, target=1.0, k_max=2, seconds_per_mac=1.0,
                             seconds_per_insert=1.0)
    assert (cheap.exits, cheap.k, cheap.recall) == ((0,), 2, 1.0)  # top-2 of the cheap exit holds every label
    strict = vi.choose_config(logits, labels, macs, single=True, target=1.0, k_max=1, seconds_per_mac=1.0,
                              seconds_per_insert=1.0)
    assert (strict.exits, strict.k) == ((1,), 1)
    union = vi.choose_config(logits, labels, macs, single=False, target=1.0, k_max=1, seconds_per_mac=0.01,
                             seconds_per_insert=100.0)
    assert union.exits == (1,)  # the union (0, 1) indexes more labels per object for the same recall
    unreachable = vi.choose_config([half], labels, {(0,): 10}, single=True, target=1.0, k_max=1,
                                   seconds_per_mac=1.0, seconds_per_insert=1.0)
    assert unreachable.recall == 0.5  # none reaches the target: the highest recall


def test_label_sets_are_the_union_of_each_exits_top_k():
    a = torch.tensor([[3.0, 2.0, 1.0, 0.0]])
    b = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    assert vi.label_sets([a], 2).tolist() == [[True, True, False, False]]
    assert vi.label_sets([a, b], 1).tolist() == [[True, False, False, True]]
    assert vi.label_sets([a], 9).all()  # k′ beyond the classes: every class


def test_clusters_join_within_the_radius_and_respect_the_cap():
    features = np.array([[1.0, 0.0], [0.99, 0.14], [0.0, 1.0], [-1.0, 0.0]])
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    sets = np.zeros((4, 2), bool)
    sets[:, 0] = True
    loose = vi.IncrementalClusters(10, 0.2)
    loose.add_all(sets, features)
    assert sorted(len(c.members) for c in loose.clusters(features)) == [1, 1, 2]
    capped = vi.IncrementalClusters(2, 0.2)
    capped.add_all(sets, features)
    assert len(capped.clusters(features)) == 2 and capped.inserts == 4
    tight = vi.IncrementalClusters(10, 0.0)
    tight.add_all(sets, features)
    assert len(tight.clusters(features)) == 4


def test_calibrated_exit_answers_are_as_precise_as_asked_on_their_data(net):
    model, split = net
    sample = vr.label_sample(model, ExitModel(model, 3), split.x_val, exit_precision=0.99, max_clusters=100, radius=0.3)
    answers = vi.exit_answers(model, split.x_val, sample.thresholds)
    sure = answers >= 0
    assert sure.any()
    assert (answers[sure] == sample.labels[sure]).mean() >= 0.99
    assert (vi.exit_answers(model, split.x_val, [1.0] * 4) == -1).all()  # thresholds of 1: no exit is ever sure


class _Answers(torch.nn.Module):
    """A classifier whose answer to input i is row i of ``logits`` (inputs are their own indices)."""

    def __init__(self, logits):
        super().__init__()
        self.table = torch.tensor(logits, dtype=torch.float32)

    def forward(self, x):
        return self.table[x[:, 0].long()]


def test_the_ground_truth_ensemble_is_as_large_as_is_most_accurate_together():
    x, y = torch.arange(4).float().unsqueeze(1), torch.tensor([0, 1, 1, 0])
    right_3 = _Answers([[5, 0], [0, 5], [0, 5], [0, 1]])     # 3 of 4 right
    fixes_4th = _Answers([[1, 0], [0, 1], [0, 1], [9, 0]])   # with the first: the 4th too, the rest still right
    wrong = _Answers([[0, 9], [9, 0], [9, 0], [0, 9]])       # all wrong: undoes the fix of the 4th
    assert vr.ensemble_size([right_3, fixes_4th, wrong], x, y) == (2, [0.75, 1.0, 0.75])
    same = _Answers([[5, 0], [0, 5], [0, 5], [0, 1]])
    assert vr.ensemble_size([right_3, same], x, y) == (1, [0.75, 0.75])  # no better: the smaller
    with pytest.raises(ValueError, match="labelled"):
        vr.ensemble_size([right_3], x, y[:2])


def test_precision_and_recall_are_over_frames():
    assert vi.precision_recall({1, 2, 3, 4}, {2, 3, 4, 5, 6}) == (0.75, 0.6)
    assert vi.precision_recall(set(), set()) == (1.0, 1.0)
    assert vi.precision_recall({1}, set()) == (0.0, 1.0)


def test_bad_input_is_refused_by_name():
    frames = [np.zeros((32, 32), np.uint8), np.zeros((32, 40), np.uint8)]
    with pytest.raises(ValueError, match="inconsistent sizes"):
        vi.detect(frames)
    with pytest.raises(ValueError, match="uint8"):
        vi.detect(np.zeros((3, 32, 32), np.float32))
    with pytest.raises(ValueError, match="k'"):
        vi.label_sets([torch.zeros(2, 4)], 0)
    with pytest.raises(ValueError, match="k'"):
        vi.choose_config([torch.zeros(2, 4)], np.zeros(2, int), {(0,): 1}, single=True, target=0.9, k_max=0,
                         seconds_per_mac=1.0, seconds_per_insert=1.0)
    with pytest.raises(ValueError, match="max_clusters"):
        vi.IncrementalClusters(0, 0.1)
    with pytest.raises(ValueError, match="classes must be distinct digits"):
        sprites_clip("x", frames=5, classes=[3, 3])


def test_the_stage_refuses_a_job_without_a_multi_exit_network(tmp_path):
    import pandas as pd

    from qoeflow.params import VideoParams
    from tasks.context import StageError
    from tasks.video import models

    catalog = pd.DataFrame({"variant": ["sprites-vgg.base", "sprites-resnet.early-exit", "digits-resnet.early-exit"],
                            "family": ["sprites", "sprites", "digits"], "source_job": ["sprites-vgg", "sprites-resnet",
                                                                                      "digits-resnet"],
                            "method": ["base", "early-exit", "early-exit"], "accuracy": [0.9, 0.95, 0.99]})
    for job in ("sprites-vgg", "digits-resnet"):
        with pytest.raises(StageError, match=rf"no multi-exit network of sprites job '{job}'.*sprites jobs with one: "
                                             r"sprites-resnet"):
            models(catalog, tmp_path / "catalog.csv", tmp_path, VideoParams(job=job))


def test_an_indexed_querys_seconds_are_the_median_of_its_timed_runs_after_a_warm_up(monkeypatch):
    from types import SimpleNamespace

    import pandas as pd

    import tasks.video as stage

    runs = iter([9.0, 1.0, 3.0] * 20)  # per query: the warm-up, then two timed runs
    monkeypatch.setattr(stage, "answer", lambda *args: stage.Answer([0], 1, 1, next(runs)))
    clip = SimpleNamespace(objects={"frame": np.array([0]), "label": np.array([1])})
    found = {"ingest": pd.DataFrame({"method": ["focus", "multi-exit"], "ingest_seconds_per_frame": [0.1, 0.1]}),
             "x": torch.zeros(2, 1, 32, 32), "frames": np.array([0, 1]), "thresholds": [0.5]}
    gt = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(32 * 32, 10))
    rows = stage.workload(None, "c", clip, found, None, gt, repeats=2)
    assert {r["query_seconds"] for r in rows if r["method"] != "brute-force"} == {2.0}
    assert len(rows) == 10 * 3
