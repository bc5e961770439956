"""A lexical index of the memories' text: SQLite FTS5 (kept by triggers), PostgreSQL full-text search (GIN)

A later migration that rebuilds `memories` on SQLite (batch mode copies the table) drops the triggers with it:
it must create them again.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 00:00:00
"""

from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

SQLITE = [
    # External content: the words are indexed, the text stays in `memories` (memory.lexical).
    "CREATE VIRTUAL TABLE memories_fts USING fts5(text, content='memories', content_rowid='id', "
    "tokenize='porter unicode61')",
    "CREATE TRIGGER memories_fts_insert AFTER INSERT ON memories BEGIN "
    "INSERT INTO memories_fts(rowid, text) VALUES (new.id, new.text); END",
    "CREATE TRIGGER memories_fts_delete AFTER DELETE ON memories BEGIN "
    "INSERT INTO memories_fts(memories_fts, rowid, text) VALUES ('delete', old.id, old.text); END",
    "CREATE TRIGGER memories_fts_update AFTER UPDATE OF text ON memories BEGIN "
    "INSERT INTO memories_fts(memories_fts, rowid, text) VALUES ('delete', old.id, old.text); "
    "INSERT INTO memories_fts(rowid, text) VALUES (new.id, new.text); END",
    "INSERT INTO memories_fts(memories_fts) VALUES ('rebuild')",
]


def upgrade() -> None:
    if op.get_bind().dialect.name == 'sqlite':
        for statement in SQLITE:
            op.execute(statement)
    else:
        op.execute("CREATE INDEX ix_memories_text_words ON memories USING gin (to_tsvector('english', text))")


def downgrade() -> None:
    if op.get_bind().dialect.name == 'sqlite':
        for name in ('memories_fts_insert', 'memories_fts_delete', 'memories_fts_update'):
            op.execute(f"DROP TRIGGER {name}")
        op.execute("DROP TABLE memories_fts")
    else:
        op.execute("DROP INDEX ix_memories_text_words")
