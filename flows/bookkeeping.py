"""DVC is the one bookkeeper: it says whether a stage is up to date, and records the stages qoeflow ran,
so that `qoeflow run` and `dvc repro` agree on what is stale."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from flows import dvc_parsing
from qoeflow.dag.codedeps import module_closure, module_templates
from qoeflow.dag.dvc_export import render, to_dvc
from qoeflow.dag.spec import Dag, lookup
from qoeflow.params import effective_tree
from tasks import REGISTRY
from tasks.context import RUN_RECORD, write_atomic_bytes


@dataclass
class Outcome:
    """How one stage of a run ended."""

    stage: str
    status: str  # ran | cached | failed | blocked | pending
    seconds: float = 0.0
    compute_seconds: float = 0.0
    critical_seconds: float = 0.0  # compute on the stage's critical path (its longest item, then its gather)
    outputs: list[str] = field(default_factory=list)
    message: str = ""
    transfer: dict[str, Any] = field(default_factory=dict)  # on a cluster: bytes and seconds through the remote


def write_summary(root: Path, dag_path: str, wall_seconds: float, outcomes: list[Outcome],
                  timings: dict[str, float] | None = None) -> dict[str, Any]:
    """Record the run's outcome in `.qoeflow/runs/last.json` (the summary table and benchmarks read it);
    `timings`: seconds of driver work by kind (DVC status and commit, submitting, waiting...)."""
    summary = {"dag": dag_path, "wall_seconds": wall_seconds, "stages": [asdict(o) for o in outcomes],
               "timings": dict(timings or {})}
    record = root / RUN_RECORD
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(summary, indent=2))  # catalog-ok: the run record, not an artifact
    return summary


def add_to_summary(root: Path, key: str, value: Any) -> None:
    """Add a section to the run record written by `write_summary` (none: nothing to add to)."""
    record = root / RUN_RECORD
    if record.exists():
        summary = json.loads(record.read_text())  # catalog-ok: the run record, not an artifact
        summary[key] = value
        record.write_text(json.dumps(summary, indent=2))


def off_the_books(root: Path, dag: Dag, run_tree: dict) -> set[str]:
    """Stages whose declared params differ from what DVC sees in params.yaml and the DAG's params file (and their
    dependents).

    They always run and are never committed, so dvc.lock never records outputs under the wrong params."""
    file_tree = effective_tree(root / "params.yaml", dag.params_overrides(root))
    off: set[str] = set()
    for name in dag.order():
        stage = dag.stages[name]
        keys = stage.params + ([stage.foreach] if stage.foreach else [])
        if any(lookup(file_tree, k) != lookup(run_tree, k) for k in keys) or any(d in off for d in stage.deps):
            off.add(name)
    return off


def stage_code(root: Path, task: str, parsed: dict[Path, list[str]] | None = None) -> list[str]:
    """The project files a stage's code imports (its task module and the stage runner), transitively, and
    its task module's templates (`parsed`: shared by the calls of one moment, see module_closure)."""
    module = REGISTRY[task].module
    return module_closure(root, [module, "tasks.runner"], parsed) + module_templates(root.resolve(), module)


def dvc_text(root: Path, dag: Dag) -> str:
    """The dvc.yaml text exported from a DAG; each stage's code dependencies derived from its imports."""
    parsed: dict[Path, list[str]] = {}  # each file read once for all the stages
    code = {stage.task: stage_code(root, stage.task, parsed) for stage in dag.stages.values()}
    inputs = {stage.task: REGISTRY[stage.task].reads(dag, name) for name, stage in dag.stages.items()}
    return render(dag, to_dvc(dag, code, inputs))


def sync_dvc_file(root: Path, dag: Dag) -> bool:
    """Write the DAG's dvc.yaml if it differs from the export; True when it was written."""
    path = root / dag.dvc_file()
    text = dvc_text(root, dag)
    if path.exists() and path.read_text() == text:  # catalog-ok: dvc.yaml, not an artifact
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return True


def ensure_dvc_repo(root: Path) -> bool:
    """`dvc init` the project if it is not a DVC repository yet; True when it did.

    One that is, outside any git repository, is switched to DVC without git (`ensure_scm`)."""
    if (root / ".dvc").is_dir():
        ensure_scm(root)
        return False
    args = [sys.executable, "-m", "dvc", "init", "-q"] + ([] if (root / ".git").exists() else ["--no-scm"])
    subprocess.run(args, cwd=root, check=True)
    ignore = root / ".dvcignore"
    with ignore.open("a") as f:  # catalog-ok: .dvcignore, not an artifact
        f.write("__pycache__/\n*.pyc\n.qoeflow/\n")
    return True


def ensure_scm(root: Path) -> bool:
    """Let DVC run in a project that has `.dvc/` but is in no git repository (a downloaded archive, a copy
    without `.git`), where DVC stops with `SCMError: ... is not a git repository`: set `core.no_scm` in
    `.dvc/config.local` (this copy only; never committed) and say so in one line. True when it did."""
    if not (root / ".dvc").is_dir():
        return False
    from dvc.config import Config
    from dvc.scm import SCM, SCMError

    config = Config(dvc_dir=str(root / ".dvc"))
    if config["core"].get("no_scm"):
        return False
    try:
        SCM(str(root))
        return False
    except SCMError:
        pass
    with config.edit("local") as conf:
        conf["core"]["no_scm"] = True
    print(f"note: {root} is not in a git repository, so DVC runs here without git (core.no_scm in .dvc/config.local); "
          "to version it with git: `git init`, then `dvc config --local --unset core.no_scm`",
          file=sys.stderr, flush=True)
    return True


class DvcBook:
    """Stage status and commits through DVC's Python API, serialised by a lock (DVC locks its repo)."""

    def __init__(self, root: Path, dag: Dag) -> None:
        self.root = root
        self.dvc_file = dag.dvc_file()
        self.lock_path = root / dag.dvc_dir / "dvc.lock"
        self._lock = threading.Lock()
        dvc_parsing.install()  # each dvc.yaml / dvc.lock text parsed once, not 8 times a question
        # DVC's INFO lines and progress bars ("Waiting to acquire lock", "Computing hashes", drawn on a
        # terminal even when nothing waits) would interleave with the run's own display.
        logging.getLogger("dvc").setLevel(logging.WARNING)

    def _repo(self):
        from dvc.repo import Repo

        return Repo(str(self.root))

    def target(self, stage: str) -> str:
        return f"{self.root / self.dvc_file}:{stage}"  # absolute: DVC reads a relative target from the cwd

    def stale_reasons(self, stage: str) -> list[str]:
        """Why DVC considers the stage stale; empty when it is up to date."""
        with self._lock:
            with self._repo() as repo:
                status = repo.status(targets=[self.target(stage)])
        reasons: list[str] = []
        for entries in status.values():
            for entry in entries:
                if isinstance(entry, dict):
                    for kind, detail in entry.items():
                        reasons.append(f"{kind}: {detail}")
                else:
                    reasons.append(str(entry))
        return reasons

    def commit(self, stage: str) -> dict:
        """Record the stage's current deps, params and outputs in the DVC cache and dvc.lock; its entry.

        DVC hashes and caches (as `dvc commit --force` does); the entry is written here with libyaml,
        because DVC's own dump re-reads the whole dvc.lock with a pure-Python round-trip parser to keep
        its formatting: 0.85 s a stage on the smoke DAG's 110 kB lock, and growing with every stage."""
        from dvc.repo import lock_repo
        from dvc.stage.serialize import to_single_stage_lockfile

        with self._lock:
            with self._repo() as repo, lock_repo(repo):
                (found,) = repo.stage.collect(self.target(stage))
                found.save()
                found.commit()
                entry = json.loads(json.dumps(to_single_stage_lockfile(found)))  # catalog-ok: no file; plain dicts
                self._write_entry(stage, entry, dict(found.dvcfile.lockfile_contents))  # as DVC just read it
        return entry

    def _write_entry(self, stage: str, entry: dict, doc: dict | None = None) -> str | None:
        """Put the stage's `entry` in dvc.lock (atomically) or in `doc`, its contents when known; the lock's
        text before, when it was read (None otherwise, or when there was none)."""
        before = None
        if doc is None:
            before = self.lock_path.read_text() if self.lock_path.is_file() else None  # catalog-ok: DVC's lock
            doc = yaml.load(before, Loader=yaml.CSafeLoader) if before else None
        doc = doc or {"schema": "2.0"}
        doc.setdefault("stages", {})[stage] = entry
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic_bytes(self.lock_path, yaml.dump(doc, Dumper=yaml.CSafeDumper, sort_keys=False).encode())
        return before

    def push(self, stage: str, remote) -> None:
        """Send the outputs dvc.lock records for the stage to `remote` (a flows.versioning.Remote)."""
        from dvc.exceptions import DvcException

        from flows.versioning import VersioningError

        with self._lock:
            try:
                with self._repo() as repo:
                    repo.push(targets=[self.target(stage)], remote=remote.name)
            except DvcException as exc:
                raise VersioningError(f"pushing the outputs of stage '{stage}' to DVC remote '{remote.name}' "
                                      f"({remote.url}) failed: {exc}") from None

    def receive(self, stage: str, entry: dict, remote, record: bool) -> None:
        """A stage committed and pushed elsewhere: put its dvc.lock `entry` in dvc.lock and pull its outputs
        from `remote` into the workspace. Unless `record`, dvc.lock is then put back as it was (a run off
        the books); on a failed pull too, and the workspace keeps its earlier outputs."""
        from dvc.exceptions import DvcException

        from flows.versioning import VersioningError

        with self._lock:
            before = self._write_entry(stage, entry)
            pulled = False
            try:
                with self._repo() as repo:
                    repo.pull(targets=[self.target(stage)], remote=remote.name, force=True)
                pulled = True
            except DvcException as exc:
                raise VersioningError(f"pulling the outputs of stage '{stage}' from DVC remote '{remote.name}' "
                                      f"({remote.url}) failed: {exc}") from None
            finally:
                if not (pulled and record):
                    if before is None:
                        self.lock_path.unlink(missing_ok=True)
                    else:
                        write_atomic_bytes(self.lock_path, before.encode())
