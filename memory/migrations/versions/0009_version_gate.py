"""weight_versions.gate: the behavioural gate's verdict on a version

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 06:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('weight_versions', sa.Column('gate', sa.JSON(none_as_null=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('weight_versions') as batch:
        batch.drop_column('gate')
