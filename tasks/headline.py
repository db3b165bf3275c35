"""A stage's headline result as Markdown: the tables of its report section, read from the outputs it has
just published and from its upstream artifacts. The flow attaches it to the stage's Prefect task run as an
artifact, so the Prefect UI shows what a run produced without opening files. No Prefect here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qoeflow.dag.spec import Dag, Stage
from qoeflow.params import Params
from tasks.report import SECTIONS, Table
from tasks.runner import make_context

VIEWER = "headline-of"  # the stage a headline is read as: it depends on the stage and on all of its ancestors


def headline(root: Path, dag: Dag, stage: str, tree: dict[str, Any], params: Params | None = None) -> str | None:
    """The Markdown headline of `stage` (None for a stage whose report section has no table)."""
    known = SECTIONS.get(dag.stages[stage].task)
    if known is None:
        return None
    viewer = Stage(task="report", deps=[stage, *dag.upstream(stage)])
    view = dag.model_copy(update={"stages": {**dag.stages, VIEWER: viewer}})
    data = known.render(make_context(root, view, VIEWER, tree, params), stage)
    tables = [value for value in _flatten(data.values()) if isinstance(value, Table)]
    if not tables:
        return None
    return "\n\n".join([f"## {known.title}", *(markdown_table(table) for table in tables)]) + "\n"


def _flatten(values) -> list[Any]:
    out = []
    for value in values:
        if isinstance(value, (list, tuple)):
            out.extend(_flatten(value))
        elif isinstance(value, dict):
            out.extend(_flatten(value.values()))
        else:
            out.append(value)
    return out


def markdown_table(table: Table) -> str:
    """A report table as a Markdown (GFM) table, with its caption above and note below."""
    def cell(value: Any) -> str:
        return str(value).replace("\u00a0", " ").replace("|", "\\|").replace("\n", " ")

    lines = [f"**{cell(table.caption)}**", ""] if table.caption else []
    lines.append("| " + " | ".join(cell(c.label) for c in table.columns) + " |")
    lines.append("| " + " | ".join("---:" if c.numeric else "---" for c in table.columns) + " |")
    lines.extend("| " + " | ".join(cell(v) for v in row.cells) + " |" for row in table.rows)
    if table.note:
        lines += ["", cell(table.note)]
    return "\n".join(lines)
