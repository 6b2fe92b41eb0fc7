"""measures kept as tallies: per hour counts of instances and tasks, maintained by triggers

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-30 06:30:00

Every write of ``process_instance`` or ``human_task`` that changes what a figure counts (state,
times, process, department) appends rows to ``measure_tally``: minus the row as it was, plus the row
as it is. Triggers do it, so no code path (engine, bulk load, manual SQL) can forget it, and they only
INSERT, so concurrent writers never wait on one another. ``engine.measures.settle`` folds those rows
into one settled row per key now and then, and into one per key for all departments together
(``department_id`` -1). Existing rows are counted here, settled.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None

COLUMNS = "definition_key, department_id, hour, kind, element_id, state, n, timed_n, total_ms, due_n, late_n, settled"
TALLIES = "n, timed_n, total_ms, due_n, late_n"
KEY = ("definition_key", "kind", "department_id", "hour", "element_id", "state")
EVERYONE = -1  # department_id of the settled rows that sum every department


def _ms(dialect: str, column: str) -> str:
    """Milliseconds since 1970, exactly as engine/measures.py ``epoch_ms`` computes them."""
    if dialect == "postgresql":
        return f"CAST(date_part('epoch', {column}) * 1000 AS BIGINT)"
    return f"CAST(round((julianday({column}) - 2440587.5) * 86400000.0) AS INTEGER)"


def _instance_rows(dialect: str, row: str, sign: str, source: str = "") -> list[str]:
    """The tally rows of one instance row (``NEW``/``OLD``; or every row of ``source``): it started,
    and it ended (completed, with its cycle time, or cancelled)."""
    ms = lambda column: _ms(dialect, column)  # noqa: E731
    completed = f"{row}.state = 'completed'"
    return [
        f"INSERT INTO measure_tally ({COLUMNS}) SELECT {row}.definition_key, "
        f"coalesce({row}.starter_department_id, 0), {ms(f'{row}.started_at')} / 3600000, 'started', '', "
        f"{row}.state, {sign}, 0, 0, 0, 0, false{source}",
        f"INSERT INTO measure_tally ({COLUMNS}) SELECT {row}.definition_key, "
        f"coalesce({row}.starter_department_id, 0), {ms(f'{row}.ended_at')} / 3600000, 'ended', '', "
        f"{row}.state, {sign}, CASE WHEN {completed} THEN {sign} ELSE 0 END, "
        f"CASE WHEN {completed} THEN {sign} * ({ms(f'{row}.ended_at')} - {ms(f'{row}.started_at')}) ELSE 0 END, "
        f"0, 0, false{source} WHERE {row}.ended_at IS NOT NULL AND {row}.state IN ('completed', 'cancelled')",
    ]


def _task_rows(dialect: str, row: str, sign: str, source: str, where: str = "") -> str:
    """The tally rows of task rows ``row`` read from ``source``, joined to their instance, which
    gives the department (a task whose instance is already gone counts no more)."""
    ms = lambda column: _ms(dialect, column)  # noqa: E731
    timed = f"{row}.state = 'completed' AND {row}.completed_at IS NOT NULL"
    return (
        f"INSERT INTO measure_tally ({COLUMNS}) SELECT {row}.definition_key, "
        f"coalesce(p.starter_department_id, 0), {ms(f'{row}.created_at')} / 3600000, 'task', "
        f"{row}.element_id, {row}.state, {sign}, CASE WHEN {timed} THEN {sign} ELSE 0 END, "
        f"CASE WHEN {timed} THEN {sign} * ({ms(f'{row}.completed_at')} - {ms(f'{row}.created_at')}) ELSE 0 END, "
        f"CASE WHEN {row}.due_at IS NOT NULL THEN {sign} ELSE 0 END, "
        f"CASE WHEN {row}.completed_at > {row}.due_at THEN {sign} ELSE 0 END, false "
        f"FROM {source} JOIN process_instance p ON p.id = {row}.instance_id{where}"
    )


INSTANCE_COLUMNS = ("state", "started_at", "ended_at", "definition_key", "starter_department_id")
TASK_COLUMNS = ("state", "created_at", "completed_at", "due_at", "element_id", "definition_key", "instance_id")
ONE_ROW = "(SELECT 1) AS one"  # a one-row source, so NEW / OLD read as a table


def _changed(columns: tuple[str, ...], dialect: str) -> str:
    differs = "IS DISTINCT FROM" if dialect == "postgresql" else "IS NOT"
    return " OR ".join(f"OLD.{c} {differs} NEW.{c}" for c in columns)


def _triggers(dialect: str) -> list[tuple[str, str, str, list[str]]]:
    """(name, timing and event, table, statements) of every tally trigger."""
    return [
        ("tally_instance_insert", "AFTER INSERT", "process_instance", _instance_rows(dialect, "NEW", "1")),
        (
            "tally_instance_update",
            f"AFTER UPDATE OF {', '.join(INSTANCE_COLUMNS)}",
            "process_instance",
            [*_instance_rows(dialect, "OLD", "-1"), *_instance_rows(dialect, "NEW", "1")],
        ),
        (
            # before: its tasks are still there (the cascade deletes them afterwards, uncounted)
            "tally_instance_delete",
            "BEFORE DELETE",
            "process_instance",
            [
                _task_rows(dialect, "t", "-1", "human_task t", " WHERE t.instance_id = OLD.id"),
                *_instance_rows(dialect, "OLD", "-1"),
            ],
        ),
        ("tally_task_insert", "AFTER INSERT", "human_task", [_task_rows(dialect, "NEW", "1", ONE_ROW)]),
        (
            "tally_task_update",
            f"AFTER UPDATE OF {', '.join(TASK_COLUMNS)}",
            "human_task",
            [_task_rows(dialect, "OLD", "-1", ONE_ROW), _task_rows(dialect, "NEW", "1", ONE_ROW)],
        ),
        ("tally_task_delete", "AFTER DELETE", "human_task", [_task_rows(dialect, "OLD", "-1", ONE_ROW)]),
    ]


def _create_triggers(dialect: str) -> None:
    for name, when, table, statements in _triggers(dialect):
        columns = INSTANCE_COLUMNS if table == "process_instance" else TASK_COLUMNS
        condition = f" WHEN ({_changed(columns, dialect)})" if "UPDATE" in when else ""
        body = "; ".join(statements)
        if dialect == "postgresql":
            result = "OLD" if when.startswith("BEFORE") else "NULL"
            op.execute(
                f"CREATE FUNCTION baton_{name}() RETURNS trigger LANGUAGE plpgsql AS "
                f"$$ BEGIN {body}; RETURN {result}; END $$"
            )
            op.execute(
                f"CREATE TRIGGER {name} {when} ON {table} FOR EACH ROW{condition} "
                f"EXECUTE FUNCTION baton_{name}()"
            )
        else:
            op.execute(f"CREATE TRIGGER {name} {when} ON {table} FOR EACH ROW{condition} BEGIN {body}; END")


def _backfill(dialect: str) -> None:
    """Today's rows, counted as the triggers would have, then settled: one row per key, as
    ``engine.measures.settle`` leaves them (nobody else writes during the migration)."""
    for statement in (
        *_instance_rows(dialect, "i", "1", " FROM process_instance i"),
        _task_rows(dialect, "t", "1", "human_task t"),
    ):
        op.execute(statement)
    key = ", ".join(KEY)
    sums = "sum(n), sum(timed_n), sum(total_ms), sum(due_n), sum(late_n), true"
    for department in ("department_id", str(EVERYONE)):
        op.execute(
            f"INSERT INTO measure_tally ({key}, {TALLIES}, settled) "
            f"SELECT {key.replace('department_id', department)}, {sums} FROM measure_tally WHERE NOT settled "
            f"GROUP BY {key if department == 'department_id' else key.replace('department_id, ', '')}"
        )
    op.execute("DELETE FROM measure_tally WHERE NOT settled")


def upgrade() -> None:
    op.create_table('measure_tally',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('definition_key', sa.String(length=255), nullable=False),
    sa.Column('department_id', sa.Integer(), nullable=False),
    sa.Column('hour', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=8), nullable=False),
    sa.Column('element_id', sa.String(length=255), nullable=False),
    sa.Column('state', sa.String(length=20), nullable=False),
    sa.Column('n', sa.Integer(), nullable=False),
    sa.Column('timed_n', sa.Integer(), nullable=False),
    sa.Column('total_ms', sa.BigInteger(), nullable=False),
    sa.Column('due_n', sa.Integer(), nullable=False),
    sa.Column('late_n', sa.Integer(), nullable=False),
    sa.Column('settled', sa.Boolean(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_measure_tally'))
    )
    with op.batch_alter_table('measure_tally', schema=None) as batch_op:
        batch_op.create_index('ix_measure_tally_unsettled', ['definition_key', 'kind', 'hour'], unique=False, postgresql_where=sa.text('NOT settled'), sqlite_where=sa.text('NOT settled'))
        batch_op.create_index('ux_measure_tally_settled', list(KEY), unique=True, postgresql_where=sa.text('settled'), sqlite_where=sa.text('settled'))
    dialect = op.get_bind().dialect.name
    _backfill(dialect)
    _create_triggers(dialect)
    # figures are scoped by the starter's department now (as the managers' instance list is)
    _instance_measure_indexes(scope="starter_department_id")


def _instance_measure_indexes(scope: str) -> None:
    """The measures indexes of migration 0010, covering the column that scopes the figures."""
    with op.batch_alter_table('process_instance', schema=None) as batch_op:
        for name, key, columns in (
            ('ix_process_instance_measures_started', 'started_at', ['state', scope, 'definition_id']),
            ('ix_process_instance_measures_ended', 'ended_at', ['state', 'started_at', scope, 'definition_id']),
        ):
            batch_op.drop_index(name)
            batch_op.create_index(name, ['definition_key', key], unique=False, postgresql_include=columns)


def downgrade() -> None:
    _instance_measure_indexes(scope="started_by")
    dialect = op.get_bind().dialect.name
    for name, _, table, _ in _triggers(dialect):
        op.execute(f"DROP TRIGGER {name} ON {table}" if dialect == "postgresql" else f"DROP TRIGGER {name}")
        if dialect == "postgresql":
            op.execute(f"DROP FUNCTION baton_{name}()")
    with op.batch_alter_table('measure_tally', schema=None) as batch_op:
        batch_op.drop_index('ux_measure_tally_settled', postgresql_where=sa.text('settled'), sqlite_where=sa.text('settled'))
        batch_op.drop_index('ix_measure_tally_unsettled', postgresql_where=sa.text('NOT settled'), sqlite_where=sa.text('NOT settled'))

    op.drop_table('measure_tally')
