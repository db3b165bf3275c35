"""DVC parses each YAML text once per process.

DVC reads `dvc.yaml` and `dvc.lock` anew, several times, for every status and commit: 16 parses for one
of each on the smoke DAG, with ruamel's pure-Python constructor, 70 % of their time (0.64 of 0.92 s). A run
asks DVC about one stage at a time, over files that mostly have not changed since the last question. The
same text parses to the same data, so each distinct text is parsed once, by DVC's own parser, and a
copy is handed out after that. Round-trip parses, which DVC keeps for rewriting files in place, are
left alone.
"""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict
from typing import Any, Callable

KEPT = 16  # distinct texts remembered (dvc.yaml, dvc.lock and params files of a DAG or two)

_installed: list[Callable] = []


def parsing_once(parse: Callable[..., Any], kept: int = KEPT) -> Callable[..., Any]:
    """`parse(text, path, typ)` memoised on `text` for `typ="safe"`: each caller gets its own deep copy.
    A text that fails to parse raises every time (failures are not kept)."""
    cache: OrderedDict[str, Any] = OrderedDict()
    lock = threading.Lock()

    def parse_yaml(text: str, path: Any, typ: str = "safe") -> Any:
        if typ != "safe":
            return parse(text, path, typ)
        with lock:
            if text in cache:
                cache.move_to_end(text)
                return copy.deepcopy(cache[text])
        data = parse(text, path, typ)
        with lock:
            cache[text] = data
            while len(cache) > kept:
                cache.popitem(last=False)
        return copy.deepcopy(data)

    parse_yaml.__wrapped__ = parse  # type: ignore[attr-defined]
    return parse_yaml


def install() -> bool:
    """Route DVC's YAML parsing through `parsing_once` in this process (idempotent); False where this DVC
    has no `parse_yaml` where we look for it (then DVC parses as it always does)."""
    if _installed:
        return True
    try:
        from dvc.utils import serialize, strictyaml
        from dvc.utils.serialize import _yaml
    except ImportError:
        return False
    modules = (_yaml, serialize, strictyaml)
    original = getattr(_yaml, "parse_yaml", None)
    if original is None or not all(getattr(m, "parse_yaml", None) is original for m in modules):
        return False
    patched = parsing_once(original)
    for module in modules:
        module.parse_yaml = patched
    _installed.append(patched)
    return True
