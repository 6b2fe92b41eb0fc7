"""measures retention

Indexes for the measures of a process (engine/measures.py): instances by start and by end, human
tasks by creation, each within one process key, covering on PostgreSQL (INCLUDE) so a dashboard
reads indexes only. History retention (engine/retention.py) needs no schema: it empties
``process_instance.engine_state`` and records what it did in the audit log.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30 03:00:00
"""

from __future__ import annotations

from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('process_instance', schema=None) as batch_op:
        batch_op.create_index(
            'ix_process_instance_measures_started',
            ['definition_key', 'started_at'],
            unique=False,
            postgresql_include=['state', 'started_by', 'definition_id'],
        )
        batch_op.create_index(
            'ix_process_instance_measures_ended',
            ['definition_key', 'ended_at'],
            unique=False,
            postgresql_include=['state', 'started_at', 'started_by', 'definition_id'],
        )
    with op.batch_alter_table('human_task', schema=None) as batch_op:
        batch_op.create_index(
            'ix_human_task_measures',
            ['definition_key', 'created_at'],
            unique=False,
            postgresql_include=['element_id', 'state', 'completed_at', 'due_at', 'instance_id'],
        )


def downgrade() -> None:
    with op.batch_alter_table('human_task', schema=None) as batch_op:
        batch_op.drop_index('ix_human_task_measures')
    with op.batch_alter_table('process_instance', schema=None) as batch_op:
        batch_op.drop_index('ix_process_instance_measures_ended')
        batch_op.drop_index('ix_process_instance_measures_started')
