"""The live view's lines: a job between epochs shows its epoch, elapsed time and an estimate of what is left."""

from __future__ import annotations

import io
import re
import time

from rich.console import Console

from flows.progress import LiveView


def _screen(view: LiveView, entries: dict[str, dict]) -> str:
    console = Console(file=io.StringIO(), width=160, color_system=None)
    console.print(view._render(entries))
    return console.file.getvalue()


def test_a_job_between_epochs_shows_elapsed_and_remaining_time_and_a_finished_one_shows_done():
    now = time.time()
    view = LiveView("qoeflow-progress-test", enabled=False)
    view.stage_started("train")
    view.running["train"] = now - 75  # the stage started 1:15 ago
    entries = {  # as the board holds them: 1 epoch timed in 10 s since the first report, 3 to go
        "train[digits-mlp]": {"started": now - 12, "first_done": 0, "done": 1, "total": 4, "note": "loss 0.52",
                              "updated": now - 2},
        "train[crowd-mcnn]": {"started": now - 30, "first_done": 1, "done": 2, "total": 2, "note": "loss 1.10",
                              "updated": now - 1},
    }
    screen = _screen(view, entries)
    assert re.search(r"train\[digits-mlp\]\s+epoch 1/4\s+loss 0.52\s+1:1[56]\s+~0:30", screen), screen
    assert re.search(r"train\[crowd-mcnn\]\s+done\s+loss 1.10\s+1:1[56]\s*$", screen, re.M), screen


def test_a_single_report_gives_no_estimate_and_a_stage_without_jobs_shows_running():
    now = time.time()
    view = LiveView("qoeflow-progress-test", enabled=False)
    view.running.update({"train": now - 5, "report": now - 3})
    entries = {"train[digits-mlp]": {"started": now - 1, "first_done": 1, "done": 1, "total": 4, "note": "",
                                     "updated": now - 1}}
    screen = _screen(view, entries)
    assert re.search(r"train\[digits-mlp\]\s+epoch 1/4\s+0:0[56]\s*$", screen, re.M), screen
    assert re.search(r"^\s*report\s+running\s+0:0[34]\s*$", screen, re.M), screen
