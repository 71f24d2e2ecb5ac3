"""Apps catalog: uploads are private until an admin publishes them (published_at, published_by).

Every existing upload becomes private: before this revision every AVAILABLE application was
readable by every user, which is the defect it fixes, so nothing is published on anyone's
behalf. ``is_latest`` now means the catalog's newest version; with nothing published yet, no
record is the latest until an admin publishes one. Downgrading drops the publication and
makes the highest AVAILABLE version of each package its latest again.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies: a migration must not change when code moves.
TIMESTAMP = sa.DateTime(timezone=True)
CATALOG = "status = 'AVAILABLE' AND published_at IS NOT NULL"
GLOBAL_LATEST = """
UPDATE applications SET is_latest = (
    status = 'AVAILABLE' AND version_code = (
        SELECT MAX(other.version_code) FROM applications AS other
        WHERE other.package_name = applications.package_name AND other.status = 'AVAILABLE'
    )
)
"""


def upgrade() -> None:
    """Add the publication columns, their constraints and the listing indexes."""
    # Before the constraint exists: SQLite copies the rows into a rebuilt table.
    op.execute(sa.text("UPDATE applications SET is_latest = false WHERE is_latest"))
    with op.batch_alter_table("applications") as table:
        table.add_column(sa.Column("published_at", TIMESTAMP, nullable=True))
        table.add_column(sa.Column("published_by", sa.String(200), nullable=True))
        table.create_check_constraint(
            "ck_applications_latest_is_published", "NOT is_latest OR published_at IS NOT NULL"
        )
        table.create_check_constraint(
            "ck_applications_publisher_named", "(published_at IS NULL) = (published_by IS NULL)"
        )
    op.create_index(
        "ix_applications_uploaded_by",
        "applications",
        ["uploaded_by", "package_name", "version_code"],
    )
    op.create_index(
        "ix_applications_catalog",
        "applications",
        ["package_name", "version_code"],
        postgresql_where=sa.text(CATALOG),
        sqlite_where=sa.text(CATALOG),
    )


def downgrade() -> None:
    """Drop the publication; the latest is the highest AVAILABLE version again."""
    op.drop_index("ix_applications_catalog", table_name="applications")
    op.drop_index("ix_applications_uploaded_by", table_name="applications")
    with op.batch_alter_table("applications") as table:
        table.drop_constraint("ck_applications_publisher_named", type_="check")
        table.drop_constraint("ck_applications_latest_is_published", type_="check")
        table.drop_column("published_by")
        table.drop_column("published_at")
    op.execute(sa.text(GLOBAL_LATEST))
