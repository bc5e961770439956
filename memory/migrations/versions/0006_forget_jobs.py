"""forgetting that reaches the weights: forgotten events, forget jobs, stream checkpoints, version digests

Events get `forgotten_at` and the hits their learning counted (so a replay can take them back);
`forget_jobs` and `forget_job_streams` hold a replay and its checkpoint;
`stream_checkpoints` keep the learner's session states that a replay from a kept version needs;
weight versions get the sha256 of their stored tensors (computed here for the versions already kept).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 02:00:00
"""

import hashlib

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
UtcDateTime = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column('events', sa.Column('forgotten_at', UtcDateTime, nullable=True))
    op.add_column('events', sa.Column('hits', sa.JSON(), nullable=True))
    op.add_column('weight_versions', sa.Column('sha256', sa.String(length=64), nullable=True))
    bind = op.get_bind()
    rows = bind.execute(sa.text('SELECT id, weights FROM weight_versions')).all()
    for row_id, blob in rows:
        bind.execute(sa.text('UPDATE weight_versions SET sha256 = :digest WHERE id = :id'),
                     {'digest': hashlib.sha256(bytes(blob)).hexdigest(), 'id': row_id})

    op.create_table(
        'stream_checkpoints',
        sa.Column('id', BigId, primary_key=True),
        sa.Column('agent_id', BigId, sa.ForeignKey('agents.id', ondelete='CASCADE'), nullable=False),
        sa.Column('session_id', BigId, sa.ForeignKey('sessions.id', ondelete='CASCADE'), nullable=False),
        sa.Column('event_id', sa.BigInteger(), nullable=False),
        sa.Column('learn_state', sa.LargeBinary(), nullable=False),
        sa.Column('learn_last_token', sa.Integer(), nullable=False),
        sa.UniqueConstraint('session_id', 'event_id'),
        sqlite_autoincrement=True,
    )
    op.create_index('ix_stream_checkpoints_agent_event', 'stream_checkpoints', ['agent_id', 'event_id'])

    op.create_table(
        'forget_jobs',
        sa.Column('id', BigId, primary_key=True),
        sa.Column('agent_id', BigId, sa.ForeignKey('agents.id', ondelete='CASCADE'), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('first_event_id', sa.BigInteger(), nullable=False),
        sa.Column('from_version', sa.Integer(), nullable=True),
        sa.Column('from_event_id', sa.BigInteger(), nullable=True),
        sa.Column('replayed_through', sa.BigInteger(), nullable=True),
        sa.Column('checkpoint_weights', sa.LargeBinary(), nullable=True),
        sa.Column('events_total', sa.Integer(), nullable=False),
        sa.Column('events_done', sa.Integer(), nullable=False),
        sa.Column('bytes_total', sa.BigInteger(), nullable=False),
        sa.Column('bytes_done', sa.BigInteger(), nullable=False),
        sa.Column('result_version', sa.Integer(), nullable=True),
        sa.Column('failed_reason', sa.Text(), nullable=True),
        sa.Column('created_at', UtcDateTime, nullable=False),
        sa.Column('finished_at', UtcDateTime, nullable=True),
        sqlite_autoincrement=True,
    )
    op.create_index('ix_forget_jobs_agent_status', 'forget_jobs', ['agent_id', 'status'])

    op.create_table(
        'forget_job_streams',
        sa.Column('job_id', BigId, sa.ForeignKey('forget_jobs.id', ondelete='CASCADE'), primary_key=True),
        sa.Column('session_id', BigId, sa.ForeignKey('sessions.id', ondelete='CASCADE'), primary_key=True),
        sa.Column('learn_state', sa.LargeBinary(), nullable=True),
        sa.Column('learn_last_token', sa.Integer(), nullable=True),
    )


def downgrade() -> None:
    op.drop_table('forget_job_streams')
    op.drop_index('ix_forget_jobs_agent_status', table_name='forget_jobs')
    op.drop_table('forget_jobs')
    op.drop_index('ix_stream_checkpoints_agent_event', table_name='stream_checkpoints')
    op.drop_table('stream_checkpoints')
    # Plain ALTER TABLE (SQLite 3.35+), not a batch copy, as in 0003.
    op.drop_column('weight_versions', 'sha256')
    op.drop_column('events', 'hits')
    op.drop_column('events', 'forgotten_at')
