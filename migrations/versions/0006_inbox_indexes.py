"""inbox indexes

Indexes for the inbox query (engine/query.py, engine/tasks.py): each way a task reaches a user
(assigned, claimed, handled, offered while unassigned) is one UNION member walking its own index
in page order. See docs/benchmarks.md, "Inbox API".

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23 16:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('human_task', schema=None) as batch_op:
        batch_op.create_index('ix_human_task_claimed_state_due', ['claimed_by', 'state', 'due_at'], unique=False)
        batch_op.create_index('ix_human_task_completed_state_due', ['completed_by', 'state', 'due_at'], unique=False)
        batch_op.create_index('ix_human_task_unassigned_due', ['state', 'due_at', 'created_at', 'id'], unique=False, sqlite_where=sa.text('assignee IS NULL'), postgresql_where=sa.text('assignee IS NULL'))
        batch_op.create_index('ix_human_task_unassigned_priority', ['state', sa.text('priority DESC'), 'due_at', 'id'], unique=False, sqlite_where=sa.text('assignee IS NULL'), postgresql_where=sa.text('assignee IS NULL'))

    with op.batch_alter_table('task_candidate', schema=None) as batch_op:
        batch_op.create_index('ix_task_candidate_kind_name_task', ['kind', 'name', 'task_id'], unique=False)
        batch_op.drop_index('ix_task_candidate_kind_name')


def downgrade() -> None:
    with op.batch_alter_table('task_candidate', schema=None) as batch_op:
        batch_op.create_index('ix_task_candidate_kind_name', ['kind', 'name'], unique=False)
        batch_op.drop_index('ix_task_candidate_kind_name_task')

    with op.batch_alter_table('human_task', schema=None) as batch_op:
        batch_op.drop_index('ix_human_task_unassigned_priority', sqlite_where=sa.text('assignee IS NULL'), postgresql_where=sa.text('assignee IS NULL'))
        batch_op.drop_index('ix_human_task_unassigned_due', sqlite_where=sa.text('assignee IS NULL'), postgresql_where=sa.text('assignee IS NULL'))
        batch_op.drop_index('ix_human_task_completed_state_due')
        batch_op.drop_index('ix_human_task_claimed_state_due')
