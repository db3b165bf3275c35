"""Versioned artifacts: push every output a DAG's stages recorded in its `dvc.lock` to a DVC remote, and pull
them back into another copy of the project (a clone), where the stages are then up to date.

The default remote is `~/.cache/qoeflow/dvc-remote`: a folder outside the repository that every clone on the
machine (for one user) resolves to the same place, since DVC expands `~` when it reads `.dvc/config`. It is
written into `.dvc/config` (to be committed with `dvc.lock`) the first time a push or pull finds no default
remote. A default remote of the user's own, in `.dvc/config` or `.dvc/config.local`, wins; `--remote NAME`
picks any configured one. Checkpoints (`persist` outputs) are pushed too, so a clone can resume training.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

from flows.bookkeeping import ensure_dvc_repo
from qoeflow.dag.spec import Dag

DEFAULT_REMOTE = "qoeflow"
DEFAULT_URL = "~/.cache/qoeflow/dvc-remote"


class VersioningError(RuntimeError):
    """A push or pull that cannot be done; the message says what to do."""


@dataclass
class Remote:
    name: str
    url: str  # as DVC resolves it: an absolute path for a local remote
    added: bool = False  # configured by this call


def resolve_remote(root: Path, name: str | None = None) -> Remote:
    """The remote to use: `name`, else DVC's default remote, else qoeflow's default (configured now)."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        remotes = repo.config["remote"]
        if name is None:
            name = repo.config["core"].get("remote")
        if name is not None:
            if name not in remotes:
                known = ", ".join(sorted(remotes)) or "none"
                raise VersioningError(f"no DVC remote '{name}' (configured: {known}); "
                                      f"add it with `dvc remote add {name} URL`")
            return Remote(name, str(remotes[name]["url"]))
        with repo.config.edit("repo") as conf:
            if DEFAULT_REMOTE not in conf["remote"]:
                conf["remote"][DEFAULT_REMOTE] = {"url": DEFAULT_URL}
            conf["core"]["remote"] = DEFAULT_REMOTE
        return Remote(DEFAULT_REMOTE, str(repo.config["remote"][DEFAULT_REMOTE]["url"]), added=True)


def recorded_outputs(root: Path, dag: Dag) -> dict[str, list[str]]:
    """The outputs each stage has recorded in the DAG's dvc.lock (stages never recorded are absent)."""
    lock = root / dag.dvc_dir / "dvc.lock"
    stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {}) if lock.is_file() else {}  # catalog-ok: DVC's lock
    return {name: [o["path"] for o in stages[name].get("outs", [])] for name in dag.order() if name in stages}


def _lock_path(dag: Dag) -> str:
    return (Path(dag.dvc_dir) / "dvc.lock").as_posix()


def _remote_line(remote: Remote, verb: str) -> str:
    line = f"{verb} DVC remote '{remote.name}' ({remote.url})"
    if remote.added:
        line += ("; set as the default remote in .dvc/config "
                 "(commit it; override with `dvc remote add -d --local NAME URL`)")
    return line


def _uncommitted(root: Path, paths: list[str]) -> list[str]:
    """Which of `paths` git does not have as committed (empty outside git)."""
    if not (root / ".git").exists():
        return []
    result = subprocess.run(["git", "status", "--porcelain", "--", *paths], cwd=root, capture_output=True, text=True)
    return [line[3:] for line in result.stdout.splitlines()] if result.returncode == 0 else []


def _stage_lines(outputs: dict[str, list[str]]) -> list[str]:
    width = max(len(name) for name in outputs)
    return [f"  {name:<{width}}  {', '.join(paths)}" for name, paths in outputs.items()]


def push(root: Path, dag: Dag, remote_name: str | None = None) -> list[str]:
    """Push the outputs every stage of the DAG recorded in dvc.lock; returns the lines to print."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    ensure_dvc_repo(root)
    outputs = recorded_outputs(root, dag)
    if not outputs:
        raise VersioningError(f"nothing to push: no stage of {dag.path} is recorded in {_lock_path(dag)}; "
                              f"run `qoeflow run --dag {dag.path}` first")
    remote = resolve_remote(root, remote_name)
    try:
        with Repo(str(root)) as repo:
            count = repo.push(targets=[dag.dvc_file()], remote=remote.name)
    except DvcException as exc:
        raise VersioningError(f"push to '{remote.name}' ({remote.url}) failed: {exc}") from None
    lines = [_remote_line(remote, "pushed to"), *_stage_lines(outputs)]
    missing = [name for name in dag.order() if name not in outputs]
    if missing:
        lines.append(f"  not recorded yet (nothing to push): {', '.join(missing)}")
    lines.append(f"{count} file(s) pushed" if count else "nothing new to push: the remote has every file already")
    todo = _uncommitted(root, [_lock_path(dag), ".dvc/config"])
    if todo:
        lines.append(f"commit {' and '.join(todo)} to git, so that a clone can pull these versions: "
                     f"git add {' '.join(todo)} && git commit")
    return lines


def pull(root: Path, dag: Dag, remote_name: str | None = None) -> list[str]:
    """Fetch and check out the outputs the DAG's dvc.lock records; returns the lines to print."""
    from dvc.exceptions import CheckoutError, DvcException
    from dvc.repo import Repo

    ensure_dvc_repo(root)
    outputs = recorded_outputs(root, dag)
    if not outputs:
        raise VersioningError(f"nothing to pull: {_lock_path(dag)} records no stage of {dag.path} "
                              "(commit it where the stages ran and pushed, then clone or pull that commit)")
    remote = resolve_remote(root, remote_name)
    try:
        with Repo(str(root)) as repo:
            result = repo.pull(targets=[dag.dvc_file()], remote=remote.name)
    except CheckoutError as exc:
        failed = ", ".join(exc.result.get("failed", [])) or str(exc)
        raise VersioningError(f"pull from '{remote.name}' ({remote.url}): not in the remote nor the cache: {failed}; "
                              "push them from the project that ran those stages") from None
    except DvcException as exc:
        raise VersioningError(f"pull from '{remote.name}' ({remote.url}) failed: {exc}") from None
    stats = result.get("stats", {})
    written = len(result.get("added", [])) + len(result.get("modified", []))
    return [_remote_line(remote, "pulled from"), *_stage_lines(outputs),
            f"{stats.get('fetched', 0)} file(s) fetched; "
            + (f"{written} output(s) written" if written else "the workspace had every output already")]
