"""sessions.events_read: how many of a session's events its stored state has read

A state's token count no longer says which events it read (tokens per event depend on the
model's vocabulary), so the count of events is kept beside it. Existing sessions were all read
by byte-level models: their count is recovered from the token positions those models use
(BEGIN, then per event a role marker, its bytes and END_OF_TURN).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05 18:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


# Plain ALTER TABLE, not a batch copy: on SQLite, copying `sessions` would drop the original table,
# and its events would go with it (ON DELETE CASCADE).


def upgrade() -> None:
    op.add_column('sessions', sa.Column('events_read', sa.Integer(), nullable=False, server_default='0'))
    op.execute(
        "UPDATE sessions SET events_read = (SELECT COUNT(*) FROM events WHERE events.session_id = sessions.id "
        "AND 1 + events.byte_offset + length(events.content) + 2 * (events.seq + 1) <= sessions.position) "
        "WHERE kind = 'chat'"
    )


def downgrade() -> None:
    op.drop_column('sessions', 'events_read')
