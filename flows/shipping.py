"""Stage tasks on a Ray cluster that shares no filesystem with the driver.

On a cluster, Ray ships the project's code to every node (flows/cluster.py) and each stage task works in a
fresh folder of its own on its node (`TaskFolder`):

- it pulls the inputs its stage reads from the project's DVC remote;
- it receives the stage's working state from the driver through Ray's object store: what the stage's
  earlier items and rounds kept (`.qoeflow/staging/STAGE`), its persisted outputs and the run record, as a
  tar of at most MAX_STATE_BYTES;
- an item of a task that declares its `item_files` (tasks/__init__.py) pulls and receives only its own
  files of those folders, so what travels grows with the items, not with their square;
- an item, or a gather that asks for another round, sends back the files of that state it changed;
- the step that finishes the stage commits its outputs with DVC in its folder, pushes them to the remote,
  and returns their dvc.lock entry; the driver (`Shipper`) records the entry and pulls the outputs.

So the driver's data/ changes only by a DVC pull of a finished stage, and nothing reaches a node through
a path it happens to share with the driver.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import os
import shutil
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import yaml

from flows.versioning import Remote, VersioningError
from qoeflow.dag.spec import Dag, input_path, load_dag
from tasks import REGISTRY
from tasks.context import RUN_RECORD

MAX_STATE_BYTES = 1 << 30  # a stage's working state travels through Ray's object store: keep it bounded
SHIPPING = Path(".qoeflow") / "shipping"  # the driver's copy of each running stage's working state
DVC_CONFIGS = (".dvc/config", ".dvc/config.local")
COUNTED = ("pulled_bytes", "pull_seconds", "pushed_bytes", "push_seconds", "state_in_bytes", "state_out_bytes")


class ShippingError(RuntimeError):
    """A stage's working state that cannot travel (too large)."""


@dataclass(frozen=True)
class Shipment:
    """What the driver sends with each stage task on a cluster: the DVC remote, the project's DVC files as
    the run sees them now, and the stage's working state (a tar)."""

    remote: str
    remote_url: str
    dvc_configs: dict[str, str]  # .dvc/config and .dvc/config.local, by relative path
    dvc_file: str
    dvc_yaml: str
    lock: str  # the DAG's dvc.lock with this run's unrecorded (--set) stages too; "" when there is none
    state: bytes
    item: str = ""  # for a foreach item's task: the item's name (its own files of the task's item_files)


def state_roots(dag: Dag, stage: str) -> list[str]:
    """A stage's working state, as paths relative to the project: its staging folder and persisted outputs."""
    return [(Path(".qoeflow") / "staging" / stage).as_posix(),
            *(out.path for out in dag.stages[stage].outs.values() if out.persist)]


def item_keeps(dag: Dag, stage: str, item: str) -> Callable[[str], bool] | None:
    """Whether a file of a stage's working state (a path relative to the project) is one the item `item`
    reads, by its task's `item_files`; None when the task declares none (its items get everything)."""
    declared = REGISTRY[dag.stages[stage].task].item_files
    if not declared:
        return None
    staging = (Path(".qoeflow") / "staging" / stage).as_posix() + "/"
    outs = dag.stages[stage].outs
    folders = {outs[name].path + "/": pattern for name, pattern in declared.items() if name in outs}

    def keeps(rel: str) -> bool:
        if rel.startswith(staging):  # the kept documents, and the item's own sub-folder
            inner = rel[len(staging):]
            return "/" not in inner or inner.startswith(f"{item}/")
        for folder, pattern in folders.items():
            if rel.startswith(folder):
                return pattern is not None and rel[len(folder):] == pattern.format(item=item)
        return True

    return keeps


def item_inputs(dag: Dag, stage: str, item: str) -> list[tuple[str, str]]:
    """What a task of `stage` pulls: (the input's path, the path to pull), one per input it reads; for an
    item (`item` not empty) of a task with `item_files`, only the item's own file of those folders."""
    task = REGISTRY[dag.stages[stage].task]
    pulls = []
    for name in task.item_reads(dag, stage) if item else task.reads(dag, stage):
        path = input_path(dag, stage, name)
        pattern = task.item_files.get(name) if item else None
        pulls.append((path, f"{path}/{pattern.format(item=item)}" if pattern else path))
    return sorted(set(pulls))


def _files(root: Path, relatives: list[str]) -> dict[str, tuple[int, int]]:
    """Every file under `relatives` (files or folders) of `root`: relative path -> (size, mtime in ns)."""
    found = {}
    for rel in relatives:
        path = root / rel
        if path.is_file():
            candidates = [path]
        else:
            candidates = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else []
        for file in candidates:
            stat = file.stat()
            found[file.relative_to(root).as_posix()] = (stat.st_size, stat.st_mtime_ns)
    return found


def pack(root: Path, relatives: list[str], label: str) -> bytes:
    """A tar of the files `relatives` of `root`; refuses one over MAX_STATE_BYTES."""
    size = sum((root / rel).stat().st_size for rel in relatives)
    if size > MAX_STATE_BYTES:
        raise ShippingError(f"{label}: {size / 2**20:.0f} MiB of working state, over the {MAX_STATE_BYTES >> 20} MiB "
                            "that may travel through Ray's object store between a stage's tasks")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:  # catalog-ok: files moved as bytes, validated where read
        for rel in relatives:
            tar.add(root / rel, arcname=rel, recursive=False)
    return buffer.getvalue()


def unpack(data: bytes, root: Path) -> int:
    """Write the files of a `pack` tar under `root`; how many."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:  # catalog-ok: files moved as bytes
        members = tar.getmembers()
        tar.extractall(root, filter="data")
    return len(members)


def _lock_file(dag: Dag) -> str:
    return (Path(dag.dvc_dir) / "dvc.lock").as_posix()


def _quiet_dvc() -> None:
    logging.getLogger("dvc").setLevel(logging.WARNING)


# --- on the node ----------------------------------------------------------------------------------------------

class TaskFolder:
    """A stage task's own folder on its node: the shipped code, its inputs pulled from the remote, the
    stage's working state from the driver; `finish` sends back what the driver needs."""

    def __init__(self, ship: Shipment, dag_path: str, stage: str, piece: str) -> None:
        self.ship, self.dag_path, self.stage, self.piece = ship, dag_path, stage, piece
        self.root = Path()
        self.record: dict = {}

    def prepare(self) -> None:
        """Make the folder: the code, the DVC files, the working state, the inputs."""
        import ray

        import tasks

        code = Path(tasks.__file__).resolve().parents[1]  # where this process imported the project from
        self.root = Path(tempfile.mkdtemp(prefix=f"qoeflow-{self.stage}-"))
        shutil.copytree(code, self.root, dirs_exist_ok=True, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        self.record = {"piece": self.piece, "item": self.ship.item, "node": ray.get_runtime_context().get_node_id(),
                       "folder": str(self.root), "code": str(code), "node_labels": _node_labels(),
                       "data_at_start": sorted(_files(self.root, ["data"]))}
        self.dag = load_dag(self.root / self.dag_path)
        self.dag.path = self.dag_path
        for rel, text in self.ship.dvc_configs.items():
            (self.root / rel).parent.mkdir(parents=True, exist_ok=True)
            (self.root / rel).write_text(text)  # catalog-ok: DVC's config
        from dvc.config import Config

        with Config(dvc_dir=str(self.root / ".dvc")).edit("local") as conf:  # no git in this folder
            conf["core"]["no_scm"] = True
        (self.root / self.ship.dvc_file).parent.mkdir(parents=True, exist_ok=True)
        (self.root / self.ship.dvc_file).write_text(self.ship.dvc_yaml)  # catalog-ok: DVC's pipeline file
        if self.ship.lock:
            (self.root / _lock_file(self.dag)).write_text(self.ship.lock)  # catalog-ok: DVC's lock
        self.record["state_in_bytes"] = len(self.ship.state)
        unpack(self.ship.state, self.root)
        self._pull_inputs()
        self.before = _files(self.root, state_roots(self.dag, self.stage))

    def _repo(self):
        from dvc.repo import Repo

        _quiet_dvc()
        return Repo(str(self.root))

    def _remote(self) -> str:
        return f"DVC remote '{self.ship.remote}' ({self.ship.remote_url})"

    def _pull_inputs(self) -> None:
        pulls = item_inputs(self.dag, self.stage, self.ship.item)
        start = time.perf_counter()
        self._pull([target for _, target in pulls])
        # an item's own file that its folder lacks (a job that diverged): the whole folder, so that the
        # stage sees what it would see locally and says so in its own words
        self._pull([path for path, target in pulls if target != path and not (self.root / target).exists()])
        self.record["pulled"] = [target for _, target in pulls]
        self.record["pulled_bytes"] = sum(size for size, _ in _files(self.root, self.record["pulled"]).values())
        self.record["pull_seconds"] = time.perf_counter() - start

    def _pull(self, paths: list[str]) -> None:
        if not paths:
            return
        from dvc.exceptions import DvcException

        try:
            with self._repo() as repo:
                repo.pull(targets=[str(self.root / p) for p in paths], remote=self.ship.remote)  # not cwd-relative
        except (DvcException, OSError) as exc:  # a local remote's errors are the filesystem's
            raise VersioningError(f"stage '{self.stage}': pulling its inputs {', '.join(paths)} from "
                                  f"{self._remote()} failed: {exc}") from None

    def finish(self, summary: dict, final: bool) -> dict:
        """The task's summary for the driver: with the stage's dvc.lock entry once its outputs are pushed
        (`final`), otherwise with the files of its working state that this task changed."""
        if final:
            summary["dvc_entry"] = self._commit_and_push()
        else:
            after = _files(self.root, state_roots(self.dag, self.stage))
            changed = sorted(rel for rel, stat in after.items() if self.before.get(rel) != stat)
            summary["state"] = pack(self.root, changed, f"stage '{self.stage}' {self.piece}")
            self.record["state_out_bytes"] = len(summary["state"])
        summary["transfer"] = self.record
        return summary

    def _commit_and_push(self) -> dict:
        from dvc.exceptions import DvcException

        from flows.bookkeeping import DvcBook

        book = DvcBook(self.root, self.dag)
        start = time.perf_counter()
        try:
            entry = book.commit(self.stage)
            with self._repo() as repo:
                repo.push(targets=[book.target(self.stage)], remote=self.ship.remote)
        except (DvcException, OSError) as exc:  # a read-only local remote: OSError
            raise VersioningError(f"stage '{self.stage}': pushing its outputs to {self._remote()} failed: {exc}; "
                                  "its outputs stay out of the driver's data/") from None
        self.record["push_seconds"] = time.perf_counter() - start
        outs = [out.path for out in self.dag.stages[self.stage].outs.values()]
        self.record["pushed_bytes"] = sum(size for size, _ in _files(self.root, outs).values())
        return entry

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _node_labels() -> list[str]:
    """The custom resources of the node this task runs on."""
    import ray

    me = ray.get_runtime_context().get_node_id()
    for node in ray.nodes():
        if node["NodeID"] == me:
            return sorted(k for k in node.get("Resources", {}) if k not in ("CPU", "GPU", "memory", "object_store_memory")
                          and not k.startswith(("node:", "accelerator_type:")))
    return []


@contextlib.contextmanager
def workspace(root: str, dag_path: str, stage: str, piece: str, ship: Shipment | None) -> Iterator[TaskFolder | None]:
    """Where a stage task works: the driver's project folder (a local Ray: `None` is yielded), or, with a
    shipment (a cluster), a TaskFolder of its own, removed afterwards."""
    before = os.getcwd()
    if ship is None:
        os.chdir(root)
        yield None
        return
    folder = TaskFolder(ship, dag_path, stage, piece)
    try:
        folder.prepare()
        os.chdir(folder.root)
        yield folder
    finally:
        os.chdir(before)
        folder.close()


# --- on the driver --------------------------------------------------------------------------------------------

class Shipper:
    """The driver's side: builds each task's shipment, keeps the working state its tasks send back, and
    lands a finished stage (its dvc.lock entry recorded, its outputs pulled from the remote)."""

    def __init__(self, root: Path, dag: Dag, remote: Remote) -> None:
        self.root, self.dag, self.remote = root, dag, remote
        self.unrecorded: dict[str, dict] = {}  # entries of stages this run keeps out of dvc.lock (--set)
        self.transfer: dict[str, dict] = {}

    def mirror(self, stage: str) -> Path:
        return self.root / SHIPPING / stage

    def begin(self, stage: str) -> None:
        """A stage starts: its working state is what the driver's project holds of it."""
        mirror = self.mirror(stage)
        shutil.rmtree(mirror, ignore_errors=True)
        mirror.mkdir(parents=True)
        for rel in state_roots(self.dag, stage):
            source = self.root / rel
            if source.is_dir():
                shutil.copytree(source, mirror / rel)
            elif source.is_file():
                (mirror / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, mirror / rel)
        self.transfer[stage] = {**dict.fromkeys(COUNTED, 0), "land_seconds": 0.0, "tasks": []}

    def shipment(self, stage: str) -> Shipment:
        mirror = self.mirror(stage)
        record = self.root / RUN_RECORD
        if record.is_file():
            (mirror / RUN_RECORD).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(record, mirror / RUN_RECORD)
        state = pack(mirror, sorted(_files(mirror, [".qoeflow", "data"])), f"stage '{stage}'")
        configs = {rel: (self.root / rel).read_text()  # catalog-ok: DVC's config
                   for rel in DVC_CONFIGS if (self.root / rel).is_file()}
        dvc_yaml = (self.root / self.dag.dvc_file()).read_text()  # catalog-ok: DVC's pipeline file
        return Shipment(self.remote.name, self.remote.url, configs, self.dag.dvc_file(), dvc_yaml, self._lock_text(),
                        state)

    def for_item(self, ship: Shipment, stage: str, item: str) -> Shipment:
        """The shipment of one item's task: `ship` narrowed to the item's own files (`item_keeps`)."""
        keeps = item_keeps(self.dag, stage, item)
        if keeps is None:
            return dataclasses.replace(ship, item=item)
        mirror = self.mirror(stage)
        files = [rel for rel in sorted(_files(mirror, [".qoeflow", "data"])) if keeps(rel)]
        return dataclasses.replace(ship, item=item, state=pack(mirror, files, f"stage '{stage}' item {item}"))

    def _lock_text(self) -> str:
        path = self.root / _lock_file(self.dag)
        text = path.read_text() if path.is_file() else ""  # catalog-ok: DVC's lock
        if not self.unrecorded:
            return text
        lock = yaml.safe_load(text) or {}
        lock.setdefault("schema", "2.0")
        lock.setdefault("stages", {}).update(self.unrecorded)
        return yaml.safe_dump(lock, sort_keys=False)

    def keep(self, stage: str, summary: dict) -> dict:
        """A task of a running stage ended: its changed working state joins the driver's copy."""
        self._count(stage, summary.pop("transfer", {}))
        state = summary.pop("state", None)
        if state:
            unpack(state, self.mirror(stage))
        return summary

    def land(self, book, stage: str, summary: dict, record: bool) -> dict:
        """The stage's last task ended: record its dvc.lock entry (only for the run, when not `record`) and
        pull its outputs into the driver's data/."""
        self._count(stage, summary.pop("transfer", {}))
        entry = summary.pop("dvc_entry")
        start = time.perf_counter()
        book.receive(stage, entry, self.remote, record)
        if not record:
            self.unrecorded[stage] = entry
        shutil.rmtree(self.mirror(stage), ignore_errors=True)
        self.transfer[stage]["land_seconds"] += time.perf_counter() - start
        return summary

    def _count(self, stage: str, record: dict) -> None:
        totals = self.transfer[stage]  # begun by `begin`
        for key in COUNTED:
            totals[key] += record.get(key, 0)
        if record:
            keys = ("piece", "item", "node", "node_labels", "folder", "code", "data_at_start", "pulled")
            totals["tasks"].append({k: record[k] for k in keys if k in record})
