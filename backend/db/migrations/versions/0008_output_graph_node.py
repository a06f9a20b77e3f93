"""vocabulary: ``job_outputs.node_id`` names a graph node, so it becomes ``graph_node_id``

The last column where ``node_id`` meant a node of the workflow's graph rather than the
ComfyUI host (0006 renamed ``stage_aliases``'s). Its unique slot constraint follows the rename
(PostgreSQL renames in place; SQLite's batch copy carries it over).

Revision ID: 0008
Revises: 0007
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("job_outputs") as batch_op:
        batch_op.alter_column("node_id", new_column_name="graph_node_id")


def downgrade() -> None:
    with op.batch_alter_table("job_outputs") as batch_op:
        batch_op.alter_column("graph_node_id", new_column_name="node_id")
