"""The run's reaper: when the process that started it ends, however it ends (SIGKILL included), every
process that one started since goes too: the embedded Prefect server, the local Ray (GCS, raylet, its
agents and workers), the flow-run subprocesses of `qoeflow serve`.

Why a separate process: a SIGKILLed driver runs no cleanup. Ray's GCS and raylet share the driver's
fate and stop within seconds, but its dashboard and runtime-env agents stayed up (over 30 s
measured) and the Prefect server stayed up for good (it is started in a session of its own).

How: the driver starts this script (`flows.runtime.reaper`) with the read end of a pipe whose write end only
the driver holds (it is close-on-exec, so no child inherits it). While the driver lives, the reaper
notes the driver's descendants every `INTERVAL` seconds (ppid chains from /proc; pids paired with their
start times, so a recycled pid is never mistaken for one of them). When the pipe reaches end of file
(the driver exited, or closed it at the end of its run) or the driver's pid disappears, the reaper
sends SIGTERM to every noted process still alive, SIGKILL after `GRACE` seconds, and exits. Processes
that were running before the reaper started are never touched.

Linux only (it reads /proc); elsewhere `flows.runtime.reaper` starts none. Standard library only: it starts in
milliseconds with `python -I -S`, and `flows.runtime` imports its /proc helpers.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time

INTERVAL = 0.5  # seconds between two looks at the driver's descendants
GRACE = 3.0  # seconds between SIGTERM and SIGKILL


def proc_stat(pid: int) -> tuple[int, int, str] | None:
    """(parent pid, start time in clock ticks since boot, state letter) of a live process, else None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:  # catalog-ok: not an artifact
            data = f.read()
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2:].split()
    return int(fields[1]), int(fields[19]), fields[0].decode()


def start_time(pid: int) -> int | None:
    """The start time of a live, non-zombie process (its identity together with its pid), else None."""
    stat = proc_stat(pid)
    if stat is None or stat[2] in ("Z", "X"):
        return None
    return stat[1]


def is_alive(pid: int, started: int | None) -> bool:
    """True while the process `pid` that started at `started` runs (a recycled pid does not count)."""
    return started is not None and start_time(pid) == started


def process_table() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, start time) of every process visible in /proc."""
    table = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            stat = proc_stat(int(name))
            if stat is not None and stat[2] not in ("Z", "X"):
                table[int(name)] = (stat[0], stat[1])
    return table


def descendants(pid: int, table: dict[int, tuple[int, int]] | None = None) -> dict[int, int]:
    """pid -> start time of every live descendant of `pid`."""
    table = process_table() if table is None else table
    children: dict[int, list[int]] = {}
    for child, (parent, _) in table.items():
        children.setdefault(parent, []).append(child)
    found: dict[int, int] = {}
    stack = list(children.get(pid, []))
    while stack:
        child = stack.pop()
        if child not in found:
            found[child] = table[child][1]
            stack.extend(children.get(child, []))
    return found


def terminate(processes: dict[int, int], grace: float = GRACE, log=None) -> list[int]:
    """SIGTERM every process of `processes` (pid -> start time) still alive, SIGKILL what is left after
    `grace` seconds; returns the pids signalled."""
    alive = {pid: started for pid, started in processes.items() if is_alive(pid, started)}
    for pid in alive:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    left = dict(alive)
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = {pid: started for pid, started in left.items() if is_alive(pid, started)}
    for pid in left:
        _signal(pid, signal.SIGKILL)
    if log is not None:
        log(f"stopped {len(alive)} process(es): {sorted(alive)} ({len(left)} needed SIGKILL)" if alive
            else "nothing left to stop")
    return sorted(alive)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def watch(driver: int, driver_started: int, fd: int) -> None:
    """Note `driver`'s descendants until it ends (or `fd` reaches end of file), then stop them."""
    me = os.getpid()
    since = start_time(me) or 0
    noted: dict[int, int] = {}

    def look() -> bool:
        table = process_table()
        if table.get(driver, (0, -1))[1] != driver_started:
            return False
        for pid, started in descendants(driver, table).items():
            if pid != me and started >= since:
                noted[pid] = started
        return True

    while look():
        ready, _, _ = select.select([fd], [], [], INTERVAL)
        if ready and not os.read(fd, 4096):
            look()  # the driver closed the pipe itself: its children are still its children
            break
    terminate(noted, log=_log)


def _log(message: str) -> None:
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} reaper {os.getpid()}: {message}", flush=True)


def main(argv: list[str]) -> int:
    driver, driver_started, fd = (int(a) for a in argv[1:4])
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C meant for the driver is not for the reaper
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # nor is the terminal closing: it must outlive the driver
    _log(f"watching pid {driver}")
    watch(driver, driver_started, fd)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
