"""request_log: (account_id, created_at, request_id) index for paged subject exports

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_request_log_account_created", "request_log", ["account_id", "created_at", "request_id"])


def downgrade() -> None:
    op.drop_index("ix_request_log_account_created", table_name="request_log")
