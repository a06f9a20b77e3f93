"""throttles: one atomic table for every rate limit (sign-in, sign-up, redeem codes)

Replaces the per-name ``studio_login_throttle`` and the redeem counters on ``users``,
both of which were read-then-written and so let parallel attempts through.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "throttles",
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.drop_table("studio_login_throttle")
    with op.batch_alter_table("users") as batch_op:
        batch_op.drop_column("redeem_failures")
        batch_op.drop_column("redeem_window_start")


def downgrade() -> None:
    with op.batch_alter_table("users") as batch_op:
        batch_op.add_column(sa.Column("redeem_window_start", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("redeem_failures", sa.Integer(), nullable=False, server_default="0"))
    op.create_table(
        "studio_login_throttle",
        sa.Column("name_key", sa.String(length=64), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_failure_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name_key"),
    )
    op.drop_table("throttles")
