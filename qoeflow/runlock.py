"""One run at a time per project.

`run_lock` is an exclusive `flock` on `.qoeflow/run.lock`, held by `qoeflow run` for its whole run, by
`qoeflow stage` (what `dvc repro` calls) for its stage, and by each scheduled run of `qoeflow serve`.
The kernel releases it when its holder ends, even by SIGKILL, so a killed run never blocks the next
one. The holder writes its pid, DAG, command and start time into the file: a second command is refused
at once with them in the message. A process started by the holder (its environment carries
`QOEFLOW_RUN_LOCK`, and the holder is its ancestor) runs inside the holder's lock and takes none, and a
process that holds the lock may enter it again: neither deadlocks nor is refused.

`dvc_outputs_lock` registers the run's outputs in DVC's own read/write lock (`.dvc/tmp/rwlock`), as
DVC does for a stage while `dvc repro` runs it. That is what stops a `dvc repro` started beside a
`qoeflow run` *before* it touches anything: DVC deletes a stale stage's outputs before it calls the
stage's command, so a refusal inside `qoeflow stage` would come too late. DVC names the holder in its
error ("... is busy, it is being blocked by: (PID 1234): qoeflow run --dag dags/smoke.yaml"), skips the
entries of a process that no longer exists, and counts the holder's own DVC calls (same pid, same
command line) as its own.

Standard library only (DVC imported when its lock is used): `qoeflow run` and `qoeflow stage` take the
lock before any heavy import, so a refusal comes at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

LOCK_FILE = ".qoeflow/run.lock"
ENV = "QOEFLOW_RUN_LOCK"  # "<pid>:<lock path>" of the holder, for the processes it starts


class ProjectBusy(RuntimeError):
    """Another qoeflow command (or DVC) is running in this project; the message names it."""


@dataclass
class Holder:
    """Who holds a project's run lock."""

    pid: int
    dag: str
    command: str
    started: float  # time.time() when it took the lock
    host: str = ""

    def describe(self) -> str:
        when = time.localtime(self.started)
        today = time.localtime()
        fmt = "%H:%M:%S" if when[:3] == today[:3] else "%Y-%m-%d %H:%M:%S"
        return f"pid {self.pid}, {self.dag}, started {time.strftime(fmt, when)}: `{self.command}`"


_held: dict[str, int] = {}  # lock path -> depth, for the locks this process holds


def lock_path(root: Path) -> Path:
    return Path(root) / LOCK_FILE


def command_line(argv: list[str] | None = None) -> str:
    """`qoeflow ARGS...` of this process, for the lock file and messages."""
    import shlex

    argv = sys.argv if argv is None else argv
    return " ".join(["qoeflow", *(shlex.quote(a) for a in argv[1:])])


def read_holder(path: Path) -> Holder | None:
    """The holder written in a lock file (None if empty or unreadable)."""
    try:
        data = json.loads(path.read_text() or "null")
        return Holder(**data) if isinstance(data, dict) else None
    except (OSError, ValueError, TypeError):
        return None


def _ancestors(pid: int) -> set[int]:
    seen: set[int] = set()
    while pid > 1 and pid not in seen:
        seen.add(pid)
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                data = f.read()
            pid = int(data[data.rfind(b")") + 2:].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return seen


def _inside_holder(path: Path) -> bool:
    """True when this process was started (directly or not) by the live holder of the lock at `path`."""
    value = os.environ.get(ENV, "")
    pid_text, _, held_path = value.partition(":")
    if not pid_text.isdigit() or held_path != str(path):
        return False
    holder = read_holder(path)
    return holder is not None and holder.pid == int(pid_text) and holder.pid in _ancestors(os.getppid())


@dataclass
class Held:
    """What `run_lock` yields: whether this process entered a lock it (or its ancestor) already held,
    and the previous holder when that one ended without releasing the lock (a killed run), whose
    leftovers the new holder may clean."""

    nested: bool
    previous: Holder | None = None


@contextlib.contextmanager
def run_lock(root: Path, dag: str, command: str | None = None) -> Iterator[Held]:
    """Hold the project's run lock for the block, or raise `ProjectBusy` at once naming its holder."""
    path = lock_path(root).resolve()
    key = str(path)
    if key in _held or _inside_holder(path):
        _held[key] = _held.get(key, 0) + 1
        try:
            yield Held(nested=True)
        finally:
            _held[key] -= 1
            if not _held[key]:
                del _held[key]
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ProjectBusy(_busy_message(path)) from None
        previous = read_holder(path)
        me = Holder(pid=os.getpid(), dag=dag, command=command or command_line(), started=time.time(),
                    host=socket.gethostname())
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(asdict(me)).encode(), 0)
        saved = os.environ.get(ENV)
        os.environ[ENV] = f"{me.pid}:{key}"
        _held[key] = 1
        try:
            yield Held(nested=False, previous=previous)
        finally:
            del _held[key]
            if saved is None:
                os.environ.pop(ENV, None)
            else:
                os.environ[ENV] = saved
            os.ftruncate(fd, 0)  # released cleanly: nothing left for the next holder to clean
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def _busy_message(path: Path) -> str:
    holder = None
    deadline = time.monotonic() + 2.0
    while holder is None and time.monotonic() < deadline:  # the holder writes right after it locks
        holder = read_holder(path)
        if holder is None:
            time.sleep(0.05)
    who = holder.describe() if holder else f"its details are not in {LOCK_FILE} yet"
    return f"another qoeflow run is in progress in this project ({who}); wait for it to finish or stop it"


def _dvc_rwlock_args(root: Path):
    from dvc.config import Config
    from dvc.fs import localfs

    dvc_dir = Path(root) / ".dvc"
    tmp_dir = dvc_dir / "tmp"
    tmp_dir.mkdir(exist_ok=True)
    try:
        hardlink = bool(Config(dvc_dir=str(dvc_dir)).get("core", {}).get("hardlink_lock", False))
    except Exception:  # an unreadable config is DVC's own error to report, later
        hardlink = False
    return str(tmp_dir), localfs, hardlink


def forget_dvc_locks(root: Path, pid: int) -> None:
    """Drop the DVC rwlock entries of a dead process `pid` (DVC drops those of a pid that no longer
    exists by itself; this also covers a pid already reused)."""
    if not (Path(root) / ".dvc").is_dir():
        return
    from dvc.rwlock import _edit_rwlock

    tmp_dir, fs, hardlink = _dvc_rwlock_args(root)
    with _edit_rwlock(tmp_dir, fs, hardlink) as lock:
        for path, info in list(lock["write"].items()):
            if info.get("pid") == pid:
                del lock["write"][path]
        for path, infos in list(lock["read"].items()):
            lock["read"][path] = [i for i in infos if i.get("pid") != pid]
            if not lock["read"][path]:
                del lock["read"][path]


@contextlib.contextmanager
def dvc_outputs_lock(root: Path, outputs: list[str]) -> Iterator[None]:
    """Hold DVC's write lock on `outputs` (paths relative to `root`) for the block, as this process;
    raise `ProjectBusy` when DVC is running a stage that reads or writes one of them.

    The entries carry this process's pid and command line exactly as DVC writes them, so the DVC calls
    this process makes meanwhile (status, commit) are not blocked by them. Without a DVC repository
    (`qoeflow run` makes one later) there is nothing to lock."""
    if not (Path(root) / ".dvc").is_dir() or not outputs:
        yield
        return
    from dvc.lock import LockError
    from dvc.rwlock import rwlock

    tmp_dir, fs, hardlink = _dvc_rwlock_args(root)
    paths = [os.path.abspath(os.path.join(root, p)) for p in outputs]
    guard = rwlock(tmp_dir, fs, " ".join(sys.argv), [], paths, hardlink)
    try:
        guard.__enter__()
    except LockError as exc:
        raise ProjectBusy(f"DVC is running a stage in this project: {exc}") from None
    try:
        yield
    finally:
        guard.__exit__(None, None, None)


@contextlib.contextmanager
def hold_outputs(root: Path, held: Held, outputs: list[str]) -> Iterator[None]:
    """Within a run lock just taken (`held`), DVC's write lock on the run's `outputs`, after dropping
    the DVC locks a killed previous holder left; nothing more when the run lock was entered again."""
    if held.nested:
        yield
        return
    if held.previous is not None:
        forget_dvc_locks(root, held.previous.pid)
    with dvc_outputs_lock(root, outputs):
        yield


@contextlib.contextmanager
def project_lock(root: Path, dag: str, outputs: list[str], command: str | None = None) -> Iterator[None]:
    """The run lock, then DVC's write lock on the DAG's `outputs`: what a run of a DAG holds."""
    with run_lock(root, dag, command) as held, hold_outputs(root, held, outputs):
        yield
