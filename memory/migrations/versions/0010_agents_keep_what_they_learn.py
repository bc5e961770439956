"""agents that have learned keep learning what they learned: trainable='downstream' made explicit

Imported models' default changed from their norm scales to low-rank adapters. An agent whose versions hold
learned norms must go on learning norms (its versions would otherwise mean other weights), so an agent with
any weight version and no `trainable` of its own gets trainable='downstream' written into its settings.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 11:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None

agents = sa.table('agents', sa.column('id', sa.Integer), sa.column('learning_settings', sa.JSON))
versions = sa.table('weight_versions', sa.column('agent_id', sa.Integer))


def upgrade() -> None:
    bind = op.get_bind()
    learned = sa.select(versions.c.agent_id).distinct()
    for agent_id, settings in bind.execute(sa.select(agents.c.id, agents.c.learning_settings)
                                           .where(agents.c.id.in_(learned))).all():
        settings = dict(settings or {})
        if 'trainable' not in settings:
            settings['trainable'] = 'downstream'
            bind.execute(agents.update().where(agents.c.id == agent_id).values(learning_settings=settings))


def downgrade() -> None:
    pass  # 'downstream' is what these agents learned before: the setting means the same without this revision
