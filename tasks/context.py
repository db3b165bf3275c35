"""What a stage sees while it runs: params, logging, its artifacts through the catalog, and atomic
publication of its outputs.

A stage reads an upstream artifact with `ctx.load(name)` and writes its own with `ctx.save(name, obj)`:
both check the artifact against its declared kind and schema (tasks/catalog.py). Saved outputs wait in
`.qoeflow/tmp/` and are renamed into `data/` only when the whole stage succeeded, so a failed or killed
stage leaves no partial file there and the previous outputs as they were.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from qoeflow.dag.spec import Dag, input_path, lookup
from qoeflow.params import Params
from qoeflow.validate import ArtifactError


TMP = Path(".qoeflow") / "tmp"  # stages' unpublished outputs, on the same filesystem as data/
RUN_RECORD = Path(".qoeflow") / "runs" / "last.json"  # the summary of the current or last `qoeflow run`


def item_name(item: Any) -> str:
    """A `foreach` item's name: a job's `name`, or the item itself (a job name, a seed)."""
    return str(item["name"]) if isinstance(item, dict) and "name" in item else str(item)


class StageError(RuntimeError):
    """A stage that cannot do its work; the message says what is wrong and where."""


def _print(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class StageContext:
    """The running stage: its DAG entry, validated params and raw params tree, and the project root."""

    root: Path
    dag: Dag
    stage: str
    params: Params
    tree: dict[str, Any]
    log: Callable[[str], None] = _print
    progress: Callable[[str, int, int, str], None] | None = None
    round: int = 0  # an iterating `foreach` stage: which round of items and gather this is (0: the first)
    _staged: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def spec(self):
        return self.dag.stages[self.stage]

    def items(self) -> list[Any]:
        """The list a `foreach` stage fans out over."""
        return list(lookup(self.tree, self.spec.foreach)) if self.spec.foreach else []

    def input(self, name: str) -> Path:
        """Absolute path of an upstream output this stage reads; refuses a missing one."""
        path = self.root / input_path(self.dag, self.stage, name)
        if not path.exists():
            raise StageError(f"stage '{self.stage}': {self._missing(name)}")
        return path

    def require_inputs(self, names: tuple[str, ...]) -> None:
        """Refuse to start when any of the inputs `names` is missing, naming every missing one."""
        missing = [self._missing(n) for n in names if not (self.root / input_path(self.dag, self.stage, n)).exists()]
        if missing:
            raise StageError(f"stage '{self.stage}': " + "; ".join(missing))

    def _missing(self, name: str) -> str:
        producer = next(d for d in self.spec.deps if name in self.dag.stages[d].outs)
        return (f"input {input_path(self.dag, self.stage, name)} (output '{name}' of stage '{producer}') is missing; "
                f"run stage '{producer}' first (qoeflow run, or dvc repro)")

    def output(self, name: str) -> Path:
        """Absolute final path of one of this stage's outputs (written in place only for persisted folders)."""
        if name not in self.spec.outs:
            raise StageError(f"stage '{self.stage}' declares no output '{name}'")
        return self.root / self.spec.outs[name].path

    def load(self, name: str) -> Any:
        """An upstream artifact, read and checked as the catalog declares it (a DataFrame for a table,
        dicts for a JSON document, a path for a figure or a folder)."""
        from tasks.catalog import kind_of

        path = self.input(name)
        label = self._label(path)
        try:
            return kind_of(name).load(path, label, root=self.root)
        except ArtifactError as exc:
            raise StageError(f"validation failed: {exc}") from None

    def save(self, name: str, obj: Any) -> None:
        """Check `obj` as the catalog declares output `name` and write it to a temporary path; `publish()`
        puts it in place."""
        from tasks.catalog import kind_of

        label = self.spec.outs[name].path if name in self.spec.outs else name
        tmp = self.temp_output(name)
        try:
            kind_of(name).save(obj, tmp, label)
        except ArtifactError as exc:
            remove_path(tmp)
            del self._staged[name]
            raise StageError(f"validation failed: {exc}") from None

    def run_record(self) -> tuple[dict[str, dict], float]:
        """The `qoeflow run` record of this DAG (stage -> status, seconds...; written as stages end, so it
        covers the stages before this one of the current run) and when it was written. Empty when there is
        none, or it is another DAG's. Not an artifact: never a DVC dependency."""
        path = self.root / RUN_RECORD
        try:
            record = json.loads(path.read_text())
            if record.get("dag") != self.dag.path:
                return {}, 0.0
            return {s["stage"]: s for s in record["stages"]}, path.stat().st_mtime
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return {}, 0.0

    def note(self, message: str) -> None:
        """Log a message and keep it for the run's summary table."""
        self.log(message)
        self.notes.append(message)

    def _label(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)

    def staging(self, *parts: str) -> Path:
        """A scratch folder of this stage that survives between its item tasks and its gather step."""
        path = self.root / ".qoeflow" / "staging" / self.stage
        for part in parts:
            path = path / part
        path.mkdir(parents=True, exist_ok=True)
        return path

    def keep(self, name: str, doc: Any) -> None:
        """Keep a JSON document for this stage's later steps (its gather, its next round); not an artifact."""
        write_atomic_bytes(self.staging() / f"{name}.json", json.dumps(doc).encode())

    def kept(self, name: str) -> Any:
        """A document an earlier step of this stage kept."""
        path = self.staging() / f"{name}.json"
        if not path.exists():
            raise StageError(f"stage '{self.stage}': no kept document '{name}' (did the step before this one run?)")
        return json.loads(path.read_text())

    def temp_output(self, name: str) -> Path:
        """A fresh temporary path for output `name`, outside data/; `publish()` renames it into place."""
        final = self.output(name)
        scratch = self.root / TMP / self.stage
        scratch.mkdir(parents=True, exist_ok=True)
        tmp = scratch / f"{uuid.uuid4().hex[:8]}-{final.name}"
        self._staged[name] = tmp
        return tmp

    def publish(self) -> list[str]:
        """Rename every staged temporary output into place (old versions removed only after)."""
        published = []
        for name, tmp in self._staged.items():
            if not tmp.exists():
                raise StageError(f"stage '{self.stage}': output '{name}' was staged but never written")
        for name, tmp in self._staged.items():
            final = self.output(name)
            final.parent.mkdir(parents=True, exist_ok=True)
            replace_path(tmp, final, self.root / TMP / self.stage)
            published.append(self.spec.outs[name].path)
        self._staged.clear()
        return published

    def discard(self) -> None:
        """Remove staged temporaries after a failure; published outputs stay as they were."""
        for tmp in self._staged.values():
            remove_path(tmp)
        self._staged.clear()


def replace_path(new: Path, final: Path, scratch: Path) -> None:
    """Atomically put a file or folder at `final` (a folder goes through a short-lived backup in `scratch`)."""
    if new.is_dir() and final.exists():
        backup = scratch / f"old-{uuid.uuid4().hex[:8]}-{final.name}"
        os.replace(final, backup)
        os.replace(new, final)
        remove_path(backup)
    else:
        if final.is_dir():
            remove_path(final)
        os.replace(new, final)


def remove_path(path: Path) -> None:
    """Remove a file or a folder if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def write_atomic_bytes(path: Path, data: bytes) -> None:
    """Write a file through a temporary sibling and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise

