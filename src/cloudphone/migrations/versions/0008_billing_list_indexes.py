"""Billing list indexes: orders, payments and refunds by (user_id, created_at) and created_at.

They serve ``GET /orders``, ``/payments`` and ``/refunds`` (newest first, a user's own or, for
admins, everyone's). The composite index replaces the single-column ``user_id`` indexes.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("orders", "payments", "refunds")
REPLACED = ("orders", "payments")
"""Tables whose ``ix_<table>_user_id`` index the composite one makes redundant."""


def upgrade() -> None:
    """Add the list indexes; drop the user_id indexes they cover."""
    for table in TABLES:
        with op.batch_alter_table(table) as batch_op:
            batch_op.create_index(f"ix_{table}_user_id_created_at", ["user_id", "created_at"])
            batch_op.create_index(f"ix_{table}_created_at", ["created_at"])
            if table in REPLACED:
                batch_op.drop_index(f"ix_{table}_user_id")


def downgrade() -> None:
    """Back to the user_id indexes of 0002."""
    for table in TABLES:
        with op.batch_alter_table(table) as batch_op:
            if table in REPLACED:
                batch_op.create_index(f"ix_{table}_user_id", ["user_id"])
            batch_op.drop_index(f"ix_{table}_created_at")
            batch_op.drop_index(f"ix_{table}_user_id_created_at")
