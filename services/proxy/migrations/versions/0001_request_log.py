"""request_log and erasures

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "request_log",
        sa.Column("request_id", sa.String(64), primary_key=True),
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("provider", sa.String(100), nullable=False),
        sa.Column("status_code", sa.Integer, nullable=False),
        sa.Column("latency_ms", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("input_tokens", sa.BigInteger, nullable=False),
        sa.Column("output_tokens", sa.BigInteger, nullable=False),
        sa.Column("cost_micros", sa.BigInteger, nullable=False),
        sa.Column("outcome", sa.String(40), nullable=False),
        sa.Column("tokens_estimated", sa.Boolean, nullable=False),
        sa.Column("endpoint", sa.String(20), nullable=False),
        sa.Column("stream", sa.Boolean, nullable=False),
    )
    op.create_index("ix_request_log_account_id", "request_log", ["account_id"])
    op.create_index("ix_request_log_created_at", "request_log", ["created_at"])
    op.create_table(
        "erasures",
        sa.Column("request_id", sa.String(100), primary_key=True),
        sa.Column("deleted", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("erasures")
    op.drop_table("request_log")
