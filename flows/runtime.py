"""The services a run needs: one Prefect API for the driver and every Ray worker, and a reachable Ray.

Environment variables are set here, before prefect is imported, because prefect reads its settings
at import time.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import urlparse


class ServiceError(RuntimeError):
    """A service the run needs is unreachable or would not start."""


def free_port(port: int = 0) -> int:
    """A TCP port on localhost that nothing listens on now: `port` itself (refused when in use), or any."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            raise ServiceError(f"port {port} on 127.0.0.1 is in use; choose another (--port)") from None
        return s.getsockname()[1]


def ui_address(api_url: str) -> str:
    """The Prefect UI's address for an API URL (`http://HOST:PORT/api` -> `http://HOST:PORT`)."""
    return api_url.rstrip("/").removesuffix("/api")


def prefect_env(root: Path) -> dict[str, str]:
    """Prefect settings for this project: its home inside the project, analytics off, shared storage."""
    home = Path(os.environ.get("PREFECT_HOME") or root / ".qoeflow" / "prefect")
    return {
        "PREFECT_HOME": str(home),
        "PREFECT_LOCAL_STORAGE_PATH": str(home / "storage"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_CLI_PROMPT": "false",
        "RAY_DEDUP_LOGS": "0",
        "RAY_USAGE_STATS_ENABLED": "0",  # no usage report (there is no network to send it to)
        "GX_ANALYTICS_ENABLED": "false",
    }


def check_prefect_api(url: str, timeout: float = 5.0) -> None:
    """Refuse an API URL that does not answer its health check within `timeout` seconds."""
    health = url.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(health, timeout=timeout) as response:  # catalog-ok: not an artifact
            if response.status != 200:
                raise ServiceError(f"PREFECT_API_URL={url}: health check answered HTTP {response.status}")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise ServiceError(f"PREFECT_API_URL={url} is unreachable ({exc}); start that server or unset the variable") from None


def check_ray_address(address: str, timeout: float = 5.0) -> None:
    """Refuse a Ray address whose GCS port does not accept a connection within `timeout` seconds."""
    if address == "auto":
        return
    parsed = urlparse(address if "://" in address else f"ray://{address}")
    host, port = parsed.hostname, parsed.port
    if not host or not port:
        raise ServiceError(f"Ray address {address!r}: expected HOST:PORT (e.g. 127.0.0.1:6379)")
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        raise ServiceError(f"Ray address {address} is unreachable ({exc}); is `ray start --head` running there?") from None


@contextlib.contextmanager
def reaper(root: Path) -> Iterator[None]:
    """For the block, a watchdog process (flows/reaper.py) that stops every process this one starts
    meanwhile as soon as this one ends, SIGKILL included, or the block ends. Linux only."""
    if not sys.platform.startswith("linux"):
        yield
        return
    from flows import reaper as reaper_module

    read_end, write_end = os.pipe()  # both close-on-exec: no child but the reaper gets the read end
    log_path = Path(root) / ".qoeflow" / "reaper.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    me = os.getpid()
    try:
        with open(log_path, "a") as log:  # catalog-ok: not an artifact
            watcher = subprocess.Popen(  # catalog-ok: the reaper's log, not an artifact
                [sys.executable, "-I", "-S", reaper_module.__file__, str(me), str(reaper_module.start_time(me)),
                 str(read_end)],
                pass_fds=(read_end,), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,  # a signal to this process group (Ctrl-C) does not reach it
            )
    finally:
        os.close(read_end)
    _REAPERS.append(watcher)
    try:
        yield
    finally:
        os.close(write_end)  # end of file: the reaper stops what is left of this block's processes


_REAPERS: list[subprocess.Popen] = []  # kept referenced: a reaper outlives its Popen object's scope


def _dies_with_this_thread(command: list[str]) -> list[str]:
    """`command`, run so that it gets SIGTERM when the thread that starts it ends, a SIGKILL of this whole
    process included (Linux PR_SET_PDEATHSIG; start it from the main thread). The signal is set by a tiny
    exec wrapper rather than a `preexec_fn`, which is unsafe in a process that has threads."""
    if not sys.platform.startswith("linux"):
        return command
    code = ("import ctypes, os, signal, sys; ctypes.CDLL(None).prctl(1, signal.SIGTERM); "  # 1: PR_SET_PDEATHSIG
            f"os.getppid() == {os.getpid()} or sys.exit(1); "  # the parent died before prctl: no signal would come
            "os.execv(sys.argv[1], sys.argv[1:])")
    return [sys.executable, "-I", "-S", "-c", code, *command]


def _stop_stale_servers(home: Path) -> None:
    """Stop an embedded server left by a run that ended without stopping it (its owner is gone).

    Each embedded server writes `server-PID.json` (its pid and start time, its owner's) in the Prefect
    home; a server whose owner still runs (a `qoeflow serve` beside this run) is left alone."""
    from flows.reaper import is_alive, terminate

    for record in home.glob("server-*.json"):
        try:
            info = json.loads(record.read_text())  # catalog-ok: a server record, not an artifact
            if is_alive(info["owner"], info["owner_started"]):
                continue
            terminate({info["pid"]: info["started"]}, grace=10.0)
        except (OSError, ValueError, KeyError, TypeError):
            pass
        record.unlink(missing_ok=True)


def _template_path(env: dict[str, str]) -> Path | None:
    """Where a freshly migrated, empty Prefect database is kept for the projects of this machine (per Prefect
    version); None when the server uses a database of the user's choosing."""
    if env.get("PREFECT_API_DATABASE_CONNECTION_URL") or env.get("PREFECT_SERVER_DATABASE_CONNECTION_URL"):
        return None
    from importlib.metadata import version

    cache = Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "qoeflow"
    return cache / f"prefect-{version('prefect')}-empty.db"


def _seed_database(home: Path, env: dict[str, str]) -> bool:
    """Start a project's first server from the machine's empty template database: a new database spends
    about 5 s in migrations (measured: ready in 8.0 s against 2.7 s with the database in place). True if seeded."""
    template, database = _template_path(env), home / "prefect.db"
    if template is None or database.exists() or not template.is_file():
        return False
    tmp = home / f".prefect.db.tmp-{os.getpid()}"
    shutil.copyfile(template, tmp)
    os.replace(tmp, database)
    return True


def _keep_template(home: Path, env: dict[str, str]) -> None:
    """Keep a consistent copy (SQLite's backup API) of a database the server has just migrated, before any
    run is in it, as the machine's template; once per Prefect version."""
    template, database = _template_path(env), home / "prefect.db"
    if template is None or template.exists() or not database.is_file():
        return
    template.parent.mkdir(parents=True, exist_ok=True)
    tmp = template.with_name(f".{template.name}.tmp-{os.getpid()}")
    try:
        with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as source, \
                contextlib.closing(sqlite3.connect(tmp)) as copy:
            source.backup(copy)
        os.replace(tmp, template)
    except (OSError, sqlite3.Error):  # a cache, not a result: the next project migrates its own
        Path(tmp).unlink(missing_ok=True)


def recorded_flow_runs(root: Path) -> int:
    """How many flow runs the project's Prefect database holds (0 without a database)."""
    database = Path(prefect_env(root)["PREFECT_HOME"]) / "prefect.db"
    if not database.is_file():
        return 0
    try:
        with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
            return int(db.execute("SELECT count(*) FROM flow_run").fetchone()[0])
    except sqlite3.Error:  # not migrated yet (a server that never finished starting): no run in it
        return 0


def _log_tail(path: Path, lines: int = 6) -> str:
    try:
        text = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]  # catalog-ok: a log
    except OSError:
        return ""
    return " | ".join(text[-lines:])


@contextlib.contextmanager
def prefect_server(root: Path, while_starting: Callable[[str], None] | None = None,
                   startup_timeout: float = 90.0, ui: bool = False, port: int = 0) -> Iterator[str]:
    """Run one Prefect server on a localhost port (`port`, or a free one) for the duration of the block;
    yield its API URL. With `ui` it also serves the Prefect UI (at `ui_address(url)`), talking to itself.

    `while_starting(url)` runs while the server boots (it takes seconds), e.g. to start Ray meanwhile.
    The server gets SIGTERM if this process dies (call this from the main thread); a server left
    running by an earlier run that died is stopped first."""
    from flows.reaper import start_time

    port = free_port(port)
    url = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, **prefect_env(root), "PREFECT_UI_ENABLED": "true" if ui else "false",
           "PREFECT_UI_API_URL": url}
    env.pop("PREFECT_API_URL", None)
    home = Path(env["PREFECT_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    _stop_stale_servers(home)
    seeded = _seed_database(home, env)
    log_path = home / "server.log"
    prefect_bin = Path(sys.executable).with_name("prefect")
    command = [str(prefect_bin), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    with open(log_path, "w") as log:  # catalog-ok: the server's own log, no artifact
        process = subprocess.Popen(_dies_with_this_thread(command), env=env, stdout=log, stderr=subprocess.STDOUT,  # catalog-ok
                                   start_new_session=True)
    record = home / f"server-{process.pid}.json"
    record.write_text(json.dumps({"pid": process.pid, "started": start_time(process.pid), "port": port,
                                  "owner": os.getpid(), "owner_started": start_time(os.getpid())}))
    try:
        if while_starting is not None:
            while_starting(url)
        deadline = time.monotonic() + startup_timeout
        while True:
            if process.poll() is not None:
                raise ServiceError(f"the Prefect server exited at start (code {process.returncode}); see {log_path}: "
                                   f"{_log_tail(log_path)}")
            try:
                check_prefect_api(url, timeout=1.0)
                break
            except ServiceError:
                if time.monotonic() > deadline:
                    raise ServiceError(f"the Prefect server did not answer within {startup_timeout:.0f} s; see {log_path}")
                time.sleep(0.25)
        if not seeded:
            _keep_template(home, env)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        record.unlink(missing_ok=True)


@contextlib.contextmanager
def prefect_api(root: Path, while_starting: Callable[[], None] | None = None, ui: bool = False) -> Iterator[str]:
    """The run's one Prefect API: the user's `PREFECT_API_URL` if set (checked), else an embedded server
    (serving the Prefect UI too with `ui`).

    Sets the process environment (inherited by a local Ray and passed to remote workers) before
    `while_starting()` runs, which overlaps with the embedded server's start."""
    settings = prefect_env(root)
    Path(settings["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
    os.environ.update(settings)
    given = os.environ.get("PREFECT_API_URL")
    if given:
        check_prefect_api(given)
        if while_starting is not None:
            while_starting()
        try:
            yield given
        finally:
            drain_prefect()
        return

    def starting(url: str) -> None:
        os.environ["PREFECT_API_URL"] = url
        if while_starting is not None:
            while_starting()

    with prefect_server(root, starting, ui=ui) as url:
        try:
            yield url
        finally:
            drain_prefect()
            os.environ.pop("PREFECT_API_URL", None)


def drain_prefect(timeout: float = 15.0) -> None:
    """Send the logs and events still queued in this process before the server goes away (otherwise the
    process spends a minute at exit retrying a stopped server)."""
    if "prefect" not in sys.modules:
        return
    from prefect._internal.concurrency.services import QueueService

    QueueService.drain_all(timeout=timeout, at_exit=False)


def worker_env() -> dict[str, str]:
    """The variables every Ray worker needs to report to the run's Prefect API."""
    names = ["PREFECT_API_URL", "PREFECT_HOME", "PREFECT_LOCAL_STORAGE_PATH", "PREFECT_SERVER_ANALYTICS_ENABLED",
             "DO_NOT_TRACK", "GX_ANALYTICS_ENABLED", "PREFECT_API_KEY"]
    return {n: os.environ[n] for n in names if os.environ.get(n)}


def is_loopback(address: str | None) -> bool:
    """True for no address (a local Ray) or a loopback one."""
    if not address:
        return True
    host = urlparse(address if "://" in address else f"ray://{address}").hostname
    return host in ("127.0.0.1", "localhost", "::1")


def ray_init_kwargs(address: str | None, root: Path | None = None, custom: dict[str, float] | None = None) -> dict:
    """`ray.init` options: a local instance sized to this machine, or a connection to `address`.

    On a cluster, the project at `root` is shipped to the nodes as the job's working_dir (flows/cluster.py).
    A local instance offers every `custom` resource the DAG asks for (its one node is every node).
    A local or loopback Ray stays on loopback: Ray would otherwise swap 127.0.0.1 for the machine's
    network address (and fail to meet a head node started with --node-ip-address 127.0.0.1)."""
    kwargs: dict = {"runtime_env": {"env_vars": worker_env()}, "log_to_driver": True}
    if is_loopback(address):
        kwargs["_node_ip_address"] = "127.0.0.1"
    if not address:
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # Ray's switch for "single machine, loopback"
        cpus = os.cpu_count() or 1
        kwargs.update(num_cpus=cpus, include_dashboard=False)
        if custom:
            kwargs["resources"] = {name: amount * cpus for name, amount in custom.items()}
        return kwargs
    if root is not None:
        from flows.cluster import shipped_code

        kwargs["runtime_env"].update(shipped_code(root))
    if "RAY_AUTH_MODE" not in os.environ and _ray_token_available():
        # `ray start` enables token auth by default; a driver joining it must send the token.
        os.environ["RAY_AUTH_MODE"] = "token"
    return kwargs


def shutdown_ray() -> None:
    """`ray.shutdown()`, less the second it waits at the end of every local run: Ray's autoscaler monitor
    (of no use on one machine) outlives the SIGTERM that `ray.shutdown()` sends it for the whole second that
    Ray grants before SIGKILL (measured: 1.0 of 1.35 s), so it is killed first. (`_global_node` and its
    process table are Ray's internals, as of the pinned ray 2.60.)"""
    import ray
    from ray._private import worker

    node = getattr(worker, "_global_node", None)
    if node is not None and node.head:  # a Ray this process started (a driver that joined one has no processes)
        for info in node.all_processes.get("monitor", []):
            info.process.kill()
            info.process.wait(timeout=5)
    ray.shutdown()


def _ray_token_available() -> bool:
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or str(Path.home() / ".ray" / "auth_token")
    return bool(os.environ.get("RAY_AUTH_TOKEN")) or Path(path).is_file()
