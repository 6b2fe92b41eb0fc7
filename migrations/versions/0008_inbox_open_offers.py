"""inbox: task_candidate holds the offers of open tasks only; human_task.offers keeps who was offered

A task's candidate users and groups are copied onto its row (``human_task.offers``: read with the
row, no join, and kept after it closes), and the indexed ``task_candidate`` rows become the offers
of OPEN tasks only: the engine deletes them when a task closes (engine/execution.py), so "offered
to my groups" stays a short index range however much history accumulates. This backfills
``offers`` and removes the candidate rows of tasks already closed.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 03:00:00
"""

from __future__ import annotations

from itertools import groupby

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

_BATCH = 5000


def upgrade() -> None:
    with op.batch_alter_table('human_task', schema=None) as batch_op:
        batch_op.add_column(sa.Column('offers', sa.JSON(), nullable=True))

    conn = op.get_bind()
    human_task = sa.table('human_task', sa.column('id', sa.String), sa.column('offers', sa.JSON))
    rows = conn.execute(sa.text('SELECT task_id, kind, name FROM task_candidate ORDER BY task_id, kind, name'))
    update = human_task.update().where(human_task.c.id == sa.bindparam('b_id')).values(offers=sa.bindparam('o'))
    batch = []
    for task_id, candidates in groupby(rows, key=lambda r: r[0]):
        offers = {'users': [], 'groups': []}
        for _task, kind, name in candidates:
            offers['users' if kind == 'user' else 'groups'].append(name)
        batch.append({'b_id': task_id, 'o': offers})
        if len(batch) >= _BATCH:
            conn.execute(update, batch)
            batch = []
    if batch:
        conn.execute(update, batch)
    op.execute("DELETE FROM task_candidate WHERE task_id IN (SELECT id FROM human_task WHERE state <> 'ready')")


def downgrade() -> None:
    # the candidate rows of closed tasks are not recreated: they described offers that have ended
    with op.batch_alter_table('human_task', schema=None) as batch_op:
        batch_op.drop_column('offers')
