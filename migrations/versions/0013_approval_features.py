"""approval features: users copied on an instance (抄送)

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-30 03:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('instance_cc',
    sa.Column('instance_id', sa.String(length=36), nullable=False),
    sa.Column('username', sa.String(length=150), nullable=False),
    sa.Column('element_id', sa.String(length=255), nullable=True),
    sa.Column('added_by', sa.String(length=150), nullable=True),
    sa.Column('added_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['instance_id'], ['process_instance.id'], name=op.f('fk_instance_cc_instance_id_process_instance'), ondelete='CASCADE', initially='DEFERRED', deferrable=True),
    sa.PrimaryKeyConstraint('instance_id', 'username', name=op.f('pk_instance_cc'))
    )
    with op.batch_alter_table('instance_cc', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_instance_cc_username'), ['username'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('instance_cc', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_instance_cc_username'))

    op.drop_table('instance_cc')
