"""What a stage sees while it runs: paths, params, logging, and atomic publication of outputs."""

from __future__ import annotations

import os
import shutil
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from qoeflow.dag.spec import Dag, input_path, lookup
from qoeflow.params import Params


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
    _staged: dict[str, Path] = field(default_factory=dict)

    @property
    def spec(self):
        return self.dag.stages[self.stage]

    def items(self) -> list[Any]:
        """The list a `foreach` stage fans out over."""
        return list(lookup(self.tree, self.spec.foreach)) if self.spec.foreach else []

    def input(self, name: str) -> Path:
        """Absolute path of an upstream output this stage reads; refuses a missing one."""
        rel = input_path(self.dag, self.stage, name)
        path = self.root / rel
        if not path.exists():
            producer = next(d for d in self.spec.deps if name in self.dag.stages[d].outs)
            raise StageError(
                f"stage '{self.stage}': input {rel} (output '{name}' of stage '{producer}') is missing; "
                f"run stage '{producer}' first (qoeflow run, or dvc repro)"
            )
        return path

    def output(self, name: str) -> Path:
        """Absolute final path of one of this stage's outputs."""
        if name not in self.spec.outs:
            raise StageError(f"stage '{self.stage}' declares no output '{name}'")
        return self.root / self.spec.outs[name].path

    def staging(self, *parts: str) -> Path:
        """A scratch folder of this stage that survives between its item tasks and its gather step."""
        path = self.root / ".qoeflow" / "staging" / self.stage
        for part in parts:
            path = path / part
        path.mkdir(parents=True, exist_ok=True)
        return path

    def temp_output(self, name: str) -> Path:
        """A fresh temporary path beside output `name`; `publish()` renames it into place."""
        final = self.output(name)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")
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
            replace_path(tmp, final)
            published.append(self.spec.outs[name].path)
        self._staged.clear()
        return published

    def discard(self) -> None:
        """Remove staged temporaries after a failure; published outputs stay as they were."""
        for tmp in self._staged.values():
            remove_path(tmp)
        self._staged.clear()


def replace_path(new: Path, final: Path) -> None:
    """Atomically put a file or folder at `final` (a folder goes through a short-lived backup)."""
    if new.is_dir() and final.exists():
        backup = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
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
    tmp.write_bytes(data)
    os.replace(tmp, path)

