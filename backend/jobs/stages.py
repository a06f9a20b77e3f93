"""Stage aliases: the creator-facing name of each node's stage ("Pose analysis…").

The spec names them; an admin may override any of them in the database without
editing files. Overrides win.
"""

from __future__ import annotations

from sqlalchemy import select

from backend.db import Database
from backend.db.models import StageAlias, utcnow
from backend.errors import InvalidParameter
from backend.jobs.messages import StageAlias as AliasMessage
from backend.workflows import WorkflowSpec

MAX_ALIAS = 128


def aliases(db: Database, spec: WorkflowSpec) -> dict[str, AliasMessage]:
    """graph node id -> {en, zh} for every graph node of the spec that has an alias."""
    result: dict[str, AliasMessage] = {node: {"en": text.en, "zh": text.zh} for node, text in spec.stages.items()}
    with db.read() as s:
        for row in s.scalars(select(StageAlias).where(StageAlias.workflow == spec.name)):
            result[row.graph_node_id] = {"en": row.en, "zh": row.zh}
    return result


def set_alias(db: Database, spec: WorkflowSpec, graph_node_id: str, *, en: str, zh: str) -> None:
    """Override one graph node's alias (admin page)."""
    if graph_node_id not in spec.graph:
        raise InvalidParameter(f"Workflow {spec.name} has no graph node {graph_node_id!r}.", param="graph_node_id")
    en, zh = en.strip(), zh.strip()
    if not en or not zh or len(en) > MAX_ALIAS or len(zh) > MAX_ALIAS:
        raise InvalidParameter(
            f"An alias needs an English and a Chinese text of 1–{MAX_ALIAS} characters.",
            zh=f"别名需要 1–{MAX_ALIAS} 个字符的中英文文本。",
            param="alias",
        )
    with db.write() as s:
        row = s.get(StageAlias, (spec.name, graph_node_id))
        if row is None:
            s.add(StageAlias(workflow=spec.name, graph_node_id=graph_node_id, en=en, zh=zh))
        else:
            row.en, row.zh, row.updated_at = en, zh, utcnow()
