"""memories.token_start: where a row's first pair sits in its session's token stream

A memory layer searches everything older than its window, and a session's own recent pairs are
in the window already: the position of each row's pairs tells them apart. Rows written before
(the byte-level model's, whose retrieval block needs no positions) stay NULL.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05 20:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('memories', sa.Column('token_start', sa.BigInteger(), nullable=True))


def downgrade() -> None:
    # Plain ALTER TABLE (SQLite 3.35+), not a batch copy, as in 0003.
    op.drop_column('memories', 'token_start')
