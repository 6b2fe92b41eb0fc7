"""instance tracking

The managers' instance list (web/manage.py): each instance keeps its starter's department at start
(filled in for the instances already there from the starter's current department), indexed with the
start time so a department's newest instances are an index walk, and the end time is indexed (the
recently ended first; an end-date range: written once per instance, so cheap to keep); saved filters get a ``kind`` so
the instance list keeps its own next to the inbox's.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 03:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('process_instance', schema=None) as batch_op:
        batch_op.add_column(sa.Column('starter_department_id', sa.Integer(), nullable=True))
        batch_op.create_index(
            'ix_process_instance_department_started', ['starter_department_id', 'started_at'], unique=False
        )
        batch_op.create_index('ix_process_instance_ended_at', ['ended_at'], unique=False)
    op.execute(
        "UPDATE process_instance SET starter_department_id = (SELECT u.department_id FROM user_account u "
        "WHERE u.username = process_instance.started_by) WHERE started_by IS NOT NULL"
    )
    with op.batch_alter_table('saved_filter', schema=None) as batch_op:
        batch_op.add_column(sa.Column('kind', sa.String(length=20), server_default='inbox', nullable=False))
        batch_op.drop_constraint('uq_saved_filter_username', type_='unique')
        batch_op.create_unique_constraint('uq_saved_filter_username', ['username', 'kind', 'name'])


def downgrade() -> None:
    with op.batch_alter_table('saved_filter', schema=None) as batch_op:
        batch_op.drop_constraint('uq_saved_filter_username', type_='unique')
    op.execute("DELETE FROM saved_filter WHERE kind <> 'inbox'")
    with op.batch_alter_table('saved_filter', schema=None) as batch_op:
        batch_op.drop_column('kind')
        batch_op.create_unique_constraint('uq_saved_filter_username', ['username', 'name'])
    with op.batch_alter_table('process_instance', schema=None) as batch_op:
        batch_op.drop_index('ix_process_instance_ended_at')
        batch_op.drop_index('ix_process_instance_department_started')
        batch_op.drop_column('starter_department_id')
