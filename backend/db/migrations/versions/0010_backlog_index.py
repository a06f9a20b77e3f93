"""jobs: ``ix_jobs_backlog`` on (state, user_id, created_at, id), the backlog's order

The dispatcher reads each waiting user's first few queued jobs, oldest first. With this
index PostgreSQL finds the waiting users and each one's first jobs by probing it, so a pass
reads what it may place rather than every queued row (10,000 in the benchmark).

On PostgreSQL the index is built ``CONCURRENTLY``: a large jobs table keeps taking submits
while it is built. A build that was interrupted leaves an invalid index of that name, which
the next run drops and builds again.

Revision ID: 0010
Revises: 0009
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

COLUMNS = ["state", "user_id", "created_at", "id"]


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        with op.get_context().autocommit_block():
            op.execute("DROP INDEX CONCURRENTLY IF EXISTS ix_jobs_backlog")
            op.create_index("ix_jobs_backlog", "jobs", COLUMNS, postgresql_concurrently=True)
    else:
        op.create_index("ix_jobs_backlog", "jobs", COLUMNS)


def downgrade() -> None:
    op.drop_index("ix_jobs_backlog", table_name="jobs")
