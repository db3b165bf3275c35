"""A stage's code dependencies, derived from its imports: the project's own source files that its
modules import, transitively, found by reading the import statements (top-level and inside functions)
with `ast`. Files outside the project's packages (the standard library, torch, prefect...) are not
followed. Nothing is imported or run. A module's templates (`templates/<module name>/` beside it, e.g.
the report's page) count as its code too.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterable


def _module_file(root: Path, module: str) -> Path | None:
    """The project file of a dotted module name (a package's __init__.py), or None when it is not ours."""
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _package_inits(root: Path, module: str) -> list[Path]:
    """The __init__.py of every package on the way to `module` (Python runs them when it is imported)."""
    parts = module.split(".")
    found = []
    for i in range(1, len(parts)):
        init = root.joinpath(*parts[:i], "__init__.py")
        if init.is_file():
            found.append(init)
    return found


def _imported_names(path: Path, module: str) -> Iterable[str]:
    """Every module name an import statement of the file could load (`from a import b` may load a.b)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names if alias.name != "*")


def module_closure(root: Path, modules: Iterable[str], parsed: dict[Path, list[str]] | None = None) -> list[str]:
    """Project files (relative POSIX paths, sorted) that importing `modules` loads, transitively.

    Read afresh on every call (a few milliseconds a file), so the answer follows the files as they are now;
    a caller asking for several closures at one moment shares `parsed` (file -> the names it imports)
    between the calls, and each file is read once."""
    parsed = {} if parsed is None else parsed
    root = root.resolve()
    seen: dict[Path, str] = {}
    frontier = list(modules)
    while frontier:
        module = frontier.pop()
        path = _module_file(root, module)
        if path is None or path in seen:
            continue
        seen[path] = module
        for init in _package_inits(root, module):
            if init not in seen:
                frontier.append(".".join(init.relative_to(root).parent.parts))
        if path not in parsed:
            parsed[path] = [name for name in _imported_names(path, module) if name]
        frontier.extend(parsed[path])
    return sorted(p.relative_to(root).as_posix() for p in seen)


def module_templates(root: Path, module: str) -> list[str]:
    """The files under `templates/<module name>/` beside a module (relative POSIX paths, sorted)."""
    package, _, name = module.rpartition(".")
    folder = root.joinpath(*package.split("."), "templates", name) if package else root / "templates" / name
    return sorted(p.relative_to(root).as_posix() for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []
