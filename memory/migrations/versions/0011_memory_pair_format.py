"""memories.pair_format: what a row keeps of each token's pairs (memory.pair_format)

An imported model whose memory layers do not attend searches only keys, and only its lowest memory layers'
find a stated fact as well as all of them: its rows keep those keys as int8 codes ("keys8:<channels>"),
a seventeenth of the fp16 pairs. Rows written before keep theirs and stay NULL, read as "fp16"; a worker
re-encodes them in place (learner.compact).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 21:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('memories', sa.Column('pair_format', sa.String(length=200), nullable=True))


def downgrade() -> None:
    # Rows in another format than fp16 cannot be read by the code of 0010: refuse rather than lose them.
    bind = op.get_bind()
    if bind.execute(sa.text("SELECT 1 FROM memories WHERE pair_format IS NOT NULL AND pair_format != 'fp16' "
                            "LIMIT 1")).first():
        raise RuntimeError("memories are stored keys-only (pair_format keys8): the schema before 0011 cannot read "
                           "them; export and delete them first")
    op.drop_column('memories', 'pair_format')
