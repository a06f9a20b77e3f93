"""jobs: ``request_hash``, the fingerprint of the request that made a job

A retry with the same idempotency key but other parameters is then told apart from a true
retry (409 in the API) instead of getting a job it did not ask for. Jobs made before this
revision have none; for them only the workflow is compared.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.add_column(sa.Column("request_hash", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.drop_column("request_hash")
