"""sessions.transcript_digest: an OpenAI client that sends the whole history continues its session

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 00:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('sessions') as batch:
        batch.add_column(sa.Column('transcript_digest', sa.String(length=64), nullable=True))
    op.create_index('ix_sessions_agent_transcript', 'sessions', ['agent_id', 'transcript_digest'])


def downgrade() -> None:
    op.drop_index('ix_sessions_agent_transcript', table_name='sessions')
    with op.batch_alter_table('sessions') as batch:
        batch.drop_column('transcript_digest')
