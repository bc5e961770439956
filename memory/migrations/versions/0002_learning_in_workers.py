"""learning in workers: weights in SQL, learner stream state, document chunk events, prequential scores

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 18:35:10.411063
"""

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    with op.batch_alter_table('documents', schema=None) as batch_op:
        batch_op.add_column(sa.Column('content', sa.LargeBinary(), nullable=True))

    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('document_id', BigId, nullable=True))
        batch_op.add_column(sa.Column('learned_bits', sa.Float(), nullable=True))
        batch_op.create_index(batch_op.f('ix_events_document_id'), ['document_id'], unique=False)
        batch_op.create_foreign_key('fk_events_document_id_documents', 'documents', ['document_id'], ['id'],
                                    ondelete='CASCADE')

    with op.batch_alter_table('sessions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('learn_state', sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column('learn_last_token', sa.Integer(), nullable=True))

    # Revision 0001 recorded versions as file paths that no release ever wrote; none can be carried over.
    op.execute('DELETE FROM weight_versions')
    with op.batch_alter_table('weight_versions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('weights', sa.LargeBinary(), nullable=False))
        batch_op.drop_column('path')


def downgrade() -> None:
    op.execute('DELETE FROM weight_versions')
    with op.batch_alter_table('weight_versions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('path', sa.String(length=1000), nullable=False))
        batch_op.drop_column('weights')

    with op.batch_alter_table('sessions', schema=None) as batch_op:
        batch_op.drop_column('learn_last_token')
        batch_op.drop_column('learn_state')

    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_constraint('fk_events_document_id_documents', type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_events_document_id'))
        batch_op.drop_column('learned_bits')
        batch_op.drop_column('document_id')

    with op.batch_alter_table('documents', schema=None) as batch_op:
        batch_op.drop_column('content')
