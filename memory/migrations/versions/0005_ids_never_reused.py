"""SQLite: ids are never reused (AUTOINCREMENT on every table that lacked it)

Without AUTOINCREMENT SQLite gives a new row the largest id in use plus one, so deleting the newest
agent let the next one take its id, and anything kept per id outside SQL (a serving process's cached
runtime, a worker's cached learner, an index snapshot's directory) could be taken for the new one's.
PostgreSQL's sequences never reuse ids: nothing to do there.

SQLite adds AUTOINCREMENT only by recreating a table (copy, drop, rename); memory.migrate turns
foreign keys off around migrations on SQLite, so dropping the old table cascades to nothing, and
checks them afterwards.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05 23:40:00
"""

from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

# Parents before children, so each copy's foreign keys point at a table already recreated.
TABLES = ("agents", "api_keys", "sessions", "documents", "events", "weight_versions")


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for table in TABLES:
        with op.batch_alter_table(table, recreate="always", table_kwargs={"sqlite_autoincrement": True}):
            pass


def downgrade() -> None:
    # Nothing to undo: AUTOINCREMENT changes which ids new rows get, not what the rows hold.
    pass
