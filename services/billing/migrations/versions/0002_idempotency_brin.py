"""idempotency keys' time index as BRIN on PostgreSQL

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 22:40:00

The index serves only the retention sweep's range delete; keys are inserted in time order,
which is what BRIN summarises, at next to no cost per insert. SQLite keeps its B-tree.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.drop_index("ix_idempotency_created_at", table_name="idempotency")
    op.create_index("ix_idempotency_created_at", "idempotency", ["created_at"], postgresql_using="brin")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.drop_index("ix_idempotency_created_at", table_name="idempotency")
    op.create_index("ix_idempotency_created_at", "idempotency", ["created_at"])
