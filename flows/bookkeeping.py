"""DVC is the one bookkeeper: it says whether a stage is up to date, and records the stages qoeflow ran,
so that `qoeflow run` and `dvc repro` agree on what is stale."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from qoeflow.dag.dvc_export import render, to_dvc
from qoeflow.dag.spec import Dag, lookup
from qoeflow.params import effective_tree
from tasks import REGISTRY


@dataclass
class Outcome:
    """How one stage of a run ended."""

    stage: str
    status: str  # ran | cached | failed | blocked | pending
    seconds: float = 0.0
    compute_seconds: float = 0.0
    outputs: list[str] = field(default_factory=list)
    message: str = ""


def write_summary(root: Path, dag_path: str, wall_seconds: float, outcomes: list[Outcome]) -> dict[str, Any]:
    """Record the run's outcome in `.qoeflow/runs/last.json` (the summary table and benchmarks read it)."""
    summary = {"dag": dag_path, "wall_seconds": wall_seconds, "stages": [asdict(o) for o in outcomes]}
    record = root / ".qoeflow" / "runs" / "last.json"
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(summary, indent=2))
    return summary


def off_the_books(root: Path, dag: Dag, run_tree: dict) -> set[str]:
    """Stages whose declared params differ from what DVC sees in params.yaml (and their dependents).

    They always run and are never committed, so dvc.lock never records outputs under the wrong params."""
    file_tree = effective_tree(root / "params.yaml", dag.overrides)
    off: set[str] = set()
    for name in dag.order():
        stage = dag.stages[name]
        keys = stage.params + ([stage.foreach] if stage.foreach else [])
        if any(lookup(file_tree, k) != lookup(run_tree, k) for k in keys) or any(d in off for d in stage.deps):
            off.add(name)
    return off


def dvc_text(dag: Dag) -> str:
    """The dvc.yaml text exported from a DAG."""
    code = {name: t.code for name, t in REGISTRY.items()}
    inputs = {name: t.inputs for name, t in REGISTRY.items()}
    return render(dag, to_dvc(dag, code, inputs))


def sync_dvc_file(root: Path, dag: Dag) -> bool:
    """Write the DAG's dvc.yaml if it differs from the export; True when it was written."""
    path = root / dag.dvc_file()
    text = dvc_text(dag)
    if path.exists() and path.read_text() == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return True


def ensure_dvc_repo(root: Path) -> bool:
    """`dvc init` the project if it is not a DVC repository yet; True when it did."""
    if (root / ".dvc").is_dir():
        return False
    args = [sys.executable, "-m", "dvc", "init", "-q"] + ([] if (root / ".git").exists() else ["--no-scm"])
    subprocess.run(args, cwd=root, check=True)
    ignore = root / ".dvcignore"
    with ignore.open("a") as f:
        f.write("__pycache__/\n*.pyc\n.qoeflow/\n")
    return True


class DvcBook:
    """Stage status and commits through DVC's Python API, serialised by a lock (DVC locks its repo)."""

    def __init__(self, root: Path, dag: Dag) -> None:
        self.root = root
        self.dvc_file = dag.dvc_file()
        self._lock = threading.Lock()

    def _repo(self):
        from dvc.repo import Repo

        return Repo(str(self.root))

    def target(self, stage: str) -> str:
        return f"{self.dvc_file}:{stage}"

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

    def commit(self, stage: str) -> None:
        """Record the stage's current deps, params and outputs in dvc.lock and the DVC cache."""
        with self._lock:
            with self._repo() as repo:
                repo.commit(self.target(stage), force=True)
