"""privacy-policy versions and their notification outbox (P10)

Revision ID: 0002_policy_versions
Revises: 0001_privacy_requests
Create Date: 2026-12-02 13:50:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0002_policy_versions"
down_revision: str | None = "0001_privacy_requests"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "privacy_policy_versions",
        sa.Column("version", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("effective_at", sa.DateTime(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("published_at", sa.DateTime(), nullable=False),
        sa.Column("published_by", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("notified_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("version"),
    )
    with op.batch_alter_table("privacy_policy_versions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_privacy_policy_versions_effective_at"), ["effective_at"], unique=False)

    op.create_table(
        "privacy_policy_notifications",
        sa.Column("version", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("account_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("sent_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["version"], ["privacy_policy_versions.version"]),
        sa.PrimaryKeyConstraint("version", "account_id"),
    )
    with op.batch_alter_table("privacy_policy_notifications", schema=None) as batch_op:
        batch_op.create_index("ix_privacy_policy_notifications_unsent", ["sent_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("privacy_policy_notifications", schema=None) as batch_op:
        batch_op.drop_index("ix_privacy_policy_notifications_unsent")
    op.drop_table("privacy_policy_notifications")
    with op.batch_alter_table("privacy_policy_versions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_privacy_policy_versions_effective_at"))
    op.drop_table("privacy_policy_versions")
