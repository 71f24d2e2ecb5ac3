"""Which deployment owns the state kept outside the database: the deployment id.

A deployment is one database and everything its rows describe: device processes and
containers, stored objects, spooled uploads. On its first start the platform stores a random
id in the database (table ``cloudphone_deployment``) and every place outside the database that
it writes to is claimed with it:

- a directory (data directory, upload spool, filesystem object root, local device state) gets
  a stamp file, :data:`STAMP_FILE`;
- an S3 bucket prefix gets a marker object (see ``S3Storage.claim``);
- Docker containers get the label :data:`LABEL_DEPLOYMENT`, and a runtime lists only its own.

A directory or prefix stamped by another deployment is refused with
:class:`DeploymentMismatchError` at start, before any sweep or reconcile could take the other
deployment's devices or objects for orphans. A copy of a database (a restored backup) carries
the same id: delete its ``cloudphone_deployment`` row before pointing it at its own data.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

if TYPE_CHECKING:
    from cloudphone.saga import Database

STAMP_FILE = ".cloudphone-deployment"
"""Name of the stamp file in a claimed directory (JSON: deployment id and database)."""
LABEL_DEPLOYMENT = "cloudphone.deployment"
"""Container label holding the deployment id."""

metadata = sa.MetaData()

deployment_table = sa.Table(
    "cloudphone_deployment",
    metadata,
    sa.Column("singleton", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("deployment_id", sa.String(36), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)
"""One row (``singleton`` = 1): this database's deployment id, made on first start."""


@dataclass(frozen=True)
class Deployment:
    """The deployment a process belongs to.

    Attributes:
        id: Random id stored in the database on its first start (a UUID).
        database: The database's URL with the password hidden, for messages.
    """

    id: str
    database: str

    def as_stamp(self) -> dict[str, str]:
        """What a stamp (file or marker object) records."""
        return {"deployment_id": self.id, "database": self.database}


class DeploymentMismatchError(RuntimeError):
    """A directory or store belongs to another deployment (another database).

    Attributes:
        place: What was refused (``data directory /srv/var``).
        owner: The deployment its stamp names.
        this: The deployment that tried to claim it.
    """

    def __init__(
        self, place: str, owner: Deployment, this: Deployment, *, remedy: str = "delete its stamp"
    ) -> None:
        self.place, self.owner, self.this = place, owner, this
        if owner.database == this.database:
            message = (
                f"{place} was claimed by deployment {owner.id} of an earlier database at this "
                f"URL ({this.database}); this database is deployment {this.id} (recreated "
                f"since?). If the earlier database is gone for good, {remedy} to let this "
                "deployment adopt what it left there"
            )
        else:
            message = (
                f"{place} belongs to deployment {owner.id} (database {owner.database}), not "
                f"to this one: deployment {this.id} (database {this.database}). Each database "
                "needs its own data directory and object store: point this one elsewhere "
                f"(e.g. CLOUDPHONE_DATA_DIR) or use the database {owner.database} again"
            )
        super().__init__(f"refusing to start: {message}")


def stamp_of(data: Any) -> Deployment | None:
    """The deployment a stamp's JSON names, or None if it is not a stamp."""
    if isinstance(data, dict) and isinstance(data.get("deployment_id"), str):
        return Deployment(data["deployment_id"], str(data.get("database", "?")))
    return None


def claim_directory(path: Path, deployment: Deployment, *, place: str) -> None:
    """Stamp ``path`` (created if missing) as ``deployment``'s, or refuse a foreign stamp.

    Blocking (run it in a thread from async code). Processes of one deployment starting at
    once agree: the stamp is written to a private file and linked into place.

    Args:
        path: The directory.
        deployment: Who claims it.
        place: What the directory is, for the error (``data directory``).

    Raises:
        DeploymentMismatchError: Another deployment stamped it, or the stamp is unreadable.
    """
    path.mkdir(parents=True, exist_ok=True)
    stamp = path / STAMP_FILE
    if not stamp.exists():
        tmp = path / f"{STAMP_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
        tmp.write_text(json.dumps(deployment.as_stamp()) + "\n")
        try:
            with contextlib.suppress(FileExistsError):
                os.link(tmp, stamp)
        finally:
            tmp.unlink(missing_ok=True)
    try:
        owner = stamp_of(json.loads(stamp.read_text()))
    except (OSError, ValueError):
        owner = None
    if owner is None:
        owner = Deployment("unknown (unreadable stamp)", "unknown")
    if owner.id != deployment.id:
        raise DeploymentMismatchError(
            f"{place} {path}", owner, deployment, remedy=f"delete {stamp}"
        )


async def load_deployment(db: Database) -> Deployment:
    """The database's deployment, its id made on the first call (safe when many race)."""
    database = db.url.render_as_string(hide_password=True)
    query = sa.select(deployment_table.c.deployment_id).where(deployment_table.c.singleton == 1)
    async with db.read() as conn:
        found = (await conn.execute(query)).scalar_one_or_none()
    if found is None:
        async with db.begin() as conn:
            await conn.execute(_insert_once(db.dialect))
            found = (await conn.execute(query)).scalar_one()
    return Deployment(str(found), database)


def _insert_once(dialect: str) -> sa.Insert:
    row = {"singleton": 1, "deployment_id": str(uuid.uuid4()), "created_at": datetime.now(UTC)}
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(deployment_table).values(row).on_conflict_do_nothing()
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(deployment_table).values(row).on_conflict_do_nothing()
