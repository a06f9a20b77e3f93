"""vocabulary: a ComfyUI graph node is a ``graph_node_id``; ``node_id`` is the host

``stage_aliases.node_id`` named a node of the workflow's graph while ``jobs.node_id``
names the ComfyUI host the job ran on; the graph's one becomes ``graph_node_id``.

Revision ID: 0006
Revises: 0005
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("stage_aliases") as batch_op:
        batch_op.alter_column("node_id", new_column_name="graph_node_id")


def downgrade() -> None:
    with op.batch_alter_table("stage_aliases") as batch_op:
        batch_op.alter_column("graph_node_id", new_column_name="node_id")
