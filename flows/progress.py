"""What a person sees while a run goes on: a live display, one line per running stage or job.

Ray workers report each epoch (`ctx.progress`) to a small named Ray actor, the board; the driver reads
the board between its waits and redraws a rich `Live` table on a terminal. When the output is not a
terminal, nothing is drawn: the per-epoch log lines (Prefect logs, forwarded by Ray) are the record.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import ray

BOARD_PREFIX = "qoeflow-progress-"


@ray.remote(num_cpus=0)
class ProgressBoard:
    """Latest progress per key (`stage[job]`): done, total, note, when it was first and last reported."""

    def __init__(self) -> None:
        self.entries: dict[str, dict] = {}

    def update(self, key: str, done: int, total: int, note: str) -> None:
        now = time.time()
        entry = self.entries.get(key)
        if entry is None or entry["total"] != total:  # a new job, or a new round of it toward a new goal
            entry = self.entries[key] = {"started": now, "first_done": done}
        entry.update(done=done, total=total, note=note, updated=now)

    def snapshot(self) -> dict[str, dict]:
        return dict(self.entries)


def reporter(board_name: str, stage: str) -> Callable[[str, int, int, str], None] | None:
    """A `ctx.progress` callback that sends a worker's progress to the run's board (None if it is gone)."""
    try:
        board = ray.get_actor(board_name)
    except ValueError:
        return None

    def report(key: str, done: int, total: int, note: str) -> None:
        board.update.remote(f"{stage}[{key}]", done, total, note)

    return report


def _clock(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 60}:{seconds % 60:02d}"


@dataclass
class LiveView:
    """The driver's side: running stages (from the driver) and per-job epochs (from the board), drawn live."""

    board_name: str
    enabled: bool
    running: dict[str, float] = field(default_factory=dict)  # stage -> start time
    _board: object = None
    _live: object = None

    def __enter__(self) -> "LiveView":
        self._board = ProgressBoard.options(name=self.board_name).remote()
        if self.enabled:
            from rich.console import Console
            from rich.live import Live

            self._live = Live(self._render({}), console=Console(stderr=True), refresh_per_second=4, transient=True)
            self._live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)
        if self._board is not None:
            ray.kill(self._board)

    def stage_started(self, name: str) -> None:
        self.running[name] = time.time()

    def stage_ended(self, name: str) -> None:
        self.running.pop(name, None)

    def refresh(self) -> None:
        if self._live is None:
            return
        try:
            entries = ray.get(self._board.snapshot.remote(), timeout=2)
        except Exception:  # a display must never stop the run
            return
        self._live.update(self._render(entries))

    def _render(self, entries: dict[str, dict]):
        from rich.table import Table
        from rich.text import Text

        table = Table(box=None, show_header=True, header_style="bold", title="qoeflow: running", title_justify="left")
        for column in ("stage / job", "progress", "", "elapsed", "remaining"):
            table.add_column(column)
        now = time.time()
        for stage, started in self.running.items():
            jobs = {k: v for k, v in entries.items() if k.startswith(f"{stage}[")}
            if not jobs:
                table.add_row(Text(stage), "running", "", _clock(now - started), "")
            for key, e in sorted(jobs.items()):
                moved = e["done"] - e["first_done"]  # epochs timed since the first report
                left = (e["updated"] - e["started"]) / moved * (e["total"] - e["done"]) if moved else None
                state = "done" if e["done"] >= e["total"] else f"epoch {e['done']}/{e['total']}"
                table.add_row(Text(key), state, Text(e["note"]), _clock(now - started),
                              "" if left is None or e["done"] >= e["total"] else f"~{_clock(left)}")
        return table
