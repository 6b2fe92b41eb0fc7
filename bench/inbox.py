"""Benchmark: GET /api/v1/tasks for one user with 100,000 open tasks in a 1,000,000-row task table.

Loads (COPY, PostgreSQL only) a task table of ``--tasks`` rows of which ``--visible`` open tasks are
visible to the user ``bench`` (groups ``bench_team`` and ``reviewers``):

  20 %  assigned to bench (half of them claimed from the bench_team pool: candidate rows kept)
  50 %  unassigned, offered to bench_team (35 %) or reviewers (15 %)
  30 %  unassigned, offered to bench as a candidate user
and, for everybody else (the rest of the rows):
  1/6   open, assigned to one of 1,000 other users (a fifth of them claimed from bench_team's pool)
  1/6   open, unassigned, offered to one of 200 other groups
  2/3   completed (a sixth of them once offered to bench_team: kept in `offers`, without
        candidate rows, as the engine keeps closed tasks; 10,000 completed by bench)

80 % of the tasks have a due date (a third of those already breached), the tasks share 5,000
instances (1 % with a paused SLA clock). ``user7`` (groups group3, group4) is the typical colleague
next to it: ~150 open tasks assigned, ~1,500 offered among the 230,000 unassigned open ones. Then
it times, through Flask's test client (and with
``--server`` also through a real gunicorn on loopback), ``--requests`` sequential requests of
each inbox URL with a bearer token and prints p50 / p95 / p99, compared with the previous run
(bench/results/inbox.json, rewritten unless ``--no-save``).

    python -m bench.inbox [--tasks 1000000] [--visible 100000] [--requests 200] [--reuse] [--server]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
PROCESS = ROOT / "processes" / "expense_approval"
RESULTS = Path(__file__).resolve().parent / "results" / "inbox.json"
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DATABASE = "baton_inbox_bench"
USER, GROUPS, PASSWORD = "bench", ("bench_team", "reviewers"), "bench-pass-1"
INSTANCES = 5000
TARGET_P95_MS = 50.0

# a typical colleague: ~150 open tasks assigned, ~1,500 offered to their two groups among 230,000
# unassigned open tasks, and years of completed tasks offered to those groups
OTHER, OTHER_GROUPS = "user7", ("group3", "group4")
# (who, query string of GET /api/v1/tasks), timed in this order, interleaved in rounds
REQUESTS = [
    (USER, ""),
    (USER, "?scope=mine"),
    (USER, "?scope=group"),
    (USER, "?sla=breached"),
    (USER, "?sort=priority"),
    (USER, "?page=20"),
    (USER, "?count=true"),
    (OTHER, ""),
    (OTHER, "?scope=group"),
    (USER, "/api/v1/process-instances"),  # a full path: the instances the user is involved in
    (OTHER, "/api/v1/process-instances"),
]
TASK_COLUMNS = (
    "id", "instance_id", "definition_key", "element_id", "name", "lane", "assignee", "due_at", "warn_at",
    "priority", "form_key", "state", "created_at", "claimed_by", "claimed_at", "completed_by",
    "completed_at", "version", "offers",
)  # fmt: skip
INSTANCE_COLUMNS = (
    "id", "definition_id", "definition_key", "business_key", "state", "started_by", "started_at",
    "updated_at", "ended_at", "engine_state", "serializer_version", "next_timer_due", "error_element",
    "error_message", "sla_paused_at", "version",
)  # fmt: skip


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _fresh_database(admin_url: str, reuse: bool) -> tuple[str, bool]:
    """The bench database URL and whether it must be loaded."""
    url = make_url(admin_url).set(database=DATABASE).render_as_string(hide_password=False)
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        exists = conn.scalar(text("SELECT 1 FROM pg_database WHERE datname = :d"), {"d": DATABASE})
        if exists and reuse:
            admin.dispose()
            return url, False
        conn.execute(text(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"))
        conn.execute(text(f"CREATE DATABASE {DATABASE}"))
    admin.dispose()
    return url, True


def _task_rows(total: int, visible: int, instance_ids: list[str], now: datetime, rng: random.Random):
    """Yields (task row tuple, [(kind, name), ...] candidates)."""
    others = total - visible
    plan = [
        # (count, state, assignee, candidates, completed_by)
        (visible // 10, "ready", USER, [("group", "bench_team")], None),  # claimed from the pool
        (visible // 10, "ready", USER, [], None),
        (visible * 35 // 100, "ready", None, [("group", "bench_team")], None),
        (visible * 15 // 100, "ready", None, [("group", "reviewers")], None),
        (visible * 30 // 100, "ready", None, [("user", USER)], None),
        (others // 30, "ready", "other", [("group", "bench_team")], None),  # colleagues claimed these
        (others * 4 // 30, "ready", "other", [], None),
        (others // 6, "ready", None, [("group", "other")], None),
        (others // 9, "completed", "other", [("group", "bench_team")], "other"),
        (10_000, "completed", USER, [], USER),
    ]
    plan.append((total - sum(p[0] for p in plan), "completed", "other", [("group", "other")], "other"))
    for count, state, assignee, candidates, completed_by in plan:
        for _ in range(count):
            created = now - timedelta(seconds=rng.uniform(0, 30 * 86400))
            due = warn = None
            if rng.random() < 0.8:
                due = now + timedelta(seconds=rng.uniform(-10 * 86400, 20 * 86400))
                if due <= created:
                    due = created + timedelta(hours=1)
                warn = created + (due - created) * 0.8
            who = f"user{rng.randrange(1000)}" if assignee == "other" else assignee
            done_by = f"user{rng.randrange(1000)}" if completed_by == "other" else completed_by
            done_at = (created + timedelta(hours=rng.uniform(1, 48))) if state == "completed" else None
            cands = [(k, f"group{rng.randrange(200)}" if n == "other" else n) for k, n in candidates]
            element = rng.choice(("submit", "manager_approval", "finance_review"))
            yield (
                (
                    _uuid(rng), rng.choice(instance_ids), "expense_approval", element, element, None, who,
                    due, warn, rng.choice((30, 50, 50, 50, 80)), "approval_decision.json", state, created,
                    who if (assignee and cands) else None, created if (assignee and cands) else None,
                    done_by, done_at, 1,
                ),
                cands,
            )  # fmt: skip


def load(url: str, total: int, visible: int) -> dict:
    """Migrate, deploy, create the bench user and its token, COPY the instances and tasks."""
    from engine.context import EngineConfig
    from engine.facade import Engine
    from engine.migrate import upgrade

    engine = Engine.from_url(url, EngineConfig())
    upgrade(engine.db.engine)
    bundle = {f.name: f.read_bytes() for f in PROCESS.iterdir() if f.is_file()}
    engine.repository.deploy(bundle, deployed_by="bench")
    engine.identity.create_user(USER, PASSWORD, role="employee", groups=GROUPS, create_missing=True)
    engine.identity.create_user(OTHER, PASSWORD, role="employee", groups=OTHER_GROUPS, create_missing=True)
    rng, now = random.Random(20261124), datetime.now(UTC)
    began = time.perf_counter()
    raw = engine.db.engine.raw_connection()
    try:
        pg = raw.driver_connection
        with pg.cursor() as cur:
            definition_id = cur.execute("SELECT id FROM process_definition LIMIT 1").fetchone()[0]
            instance_ids = [_uuid(rng) for _ in range(INSTANCES)]
            with cur.copy(f"COPY process_instance ({', '.join(INSTANCE_COLUMNS)}) FROM STDIN") as copy:
                for i, instance_id in enumerate(instance_ids):
                    started = now - timedelta(days=40)
                    paused = now - timedelta(days=1) if i % 100 == 0 else None
                    copy.write_row(
                        (
                            instance_id, definition_id, "expense_approval", f"B-{i}", "running",
                            f"user{rng.randrange(1000)}", started, started, None, None, "bench", None,
                            None, None, paused, 1,
                        )
                    )  # fmt: skip
            rows = candidates = 0
            with (
                cur.copy(f"COPY human_task ({', '.join(TASK_COLUMNS)}) FROM STDIN") as tasks,
            ):
                pending = []
                for row, cands in _task_rows(total, visible, instance_ids, now, rng):
                    offers = {
                        "users": [n for k, n in cands if k == "user"],
                        "groups": [n for k, n in cands if k == "group"],
                    }
                    tasks.write_row((*row, json.dumps(offers)))
                    rows += 1
                    if row[11] == "ready":  # as the engine keeps them: candidate rows of open tasks only
                        pending.extend((row[0], kind, name) for kind, name in cands)
            with cur.copy("COPY task_candidate (task_id, kind, name) FROM STDIN") as copy:
                for candidate in pending:
                    copy.write_row(candidate)
                    candidates += 1
        pg.commit()
        with pg.cursor() as cur:
            pg.autocommit = True
            cur.execute("VACUUM ANALYZE process_instance")
            cur.execute("VACUUM ANALYZE human_task")
            cur.execute("VACUUM ANALYZE task_candidate")
    finally:
        raw.close()
    engine.close()
    seconds = time.perf_counter() - began
    print(f"loaded {rows:,} tasks, {candidates:,} candidates, {INSTANCES:,} instances in {seconds:.0f} s")


def _tokens(url: str) -> dict[str, dict[str, str]]:
    """Authorization headers: a fresh token per user (only hashes are stored)."""
    from engine.context import EngineConfig
    from engine.errors import NotFoundError
    from engine.facade import Engine

    engine = Engine.from_url(url, EngineConfig())
    headers = {}
    for user, groups in ((USER, GROUPS), (OTHER, OTHER_GROUPS)):
        try:
            engine.identity.get_user(user)
        except NotFoundError:  # a database loaded by an older version of this script
            engine.identity.create_user(user, PASSWORD, role="employee", groups=groups, create_missing=True)
        token, _ = engine.identity.create_token(user, f"bench-{uuid.uuid4().hex[:8]}")
        headers[user] = {"Authorization": f"Bearer {token}"}
    engine.close()
    return headers


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    cuts = statistics.quantiles(ordered, n=100, method="inclusive")
    return {
        "p50_ms": round(statistics.median(ordered) * 1e3, 2),
        "p95_ms": round(cuts[94] * 1e3, 2),
        "p99_ms": round(cuts[98] * 1e3, 2),
        "max_ms": round(ordered[-1] * 1e3, 2),
    }


def _name(who: str, query: str) -> str:
    return f"{who} {query or '(default)'}"


def _path(query: str) -> str:
    return query if query.startswith("/") else f"/api/v1/tasks{query}"


def _measure(get, tokens: dict, requests: int, rounds: int) -> tuple[dict, dict]:
    """``get(path, headers) -> (status, body)`` for every request; percentiles and answer shapes."""
    samples: dict[str, list[float]] = {_name(*r): [] for r in REQUESTS}
    shapes = {}
    for who, query in REQUESTS:  # warm-up, and what each URL answers
        for _ in range(5):
            status, body = get(_path(query), tokens[who])
        assert status == 200, body
        shapes[_name(who, query)] = {"items": len(body["items"]), "total": body.get("total")}
    per_round = max(requests // rounds, 1)
    for _ in range(rounds):  # interleaved: machine noise hits every URL alike
        for who, query in REQUESTS:
            for _ in range(per_round):
                t0 = time.perf_counter()
                status, _ = get(_path(query), tokens[who])
                samples[_name(who, query)].append(time.perf_counter() - t0)
                assert status == 200
    return {name: percentiles(s) for name, s in samples.items()}, shapes


def time_test_client(url: str, tokens: dict, requests: int, rounds: int) -> tuple[dict, dict]:
    from web.app import create_app

    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "SECRET_KEY": "bench", "SCHEDULER_ENABLED": False})
    client = app.test_client()

    def get(path: str, headers: dict) -> tuple[int, dict]:
        answer = client.get(path, headers=headers)
        return answer.status_code, answer.get_json()

    try:
        return _measure(get, tokens, requests, rounds)
    finally:
        app.extensions["baton.engine"].close()


def time_server(url: str, tokens: dict, requests: int, rounds: int) -> dict:
    """The same requests, one at a time, through gunicorn (-w 2 --threads 4) on loopback."""
    from bench.http_approval import Server, http_call

    with Server(url, workers=2, threads=4) as server:
        conn = server.connection()
        figures, _ = _measure(
            lambda path, headers: http_call(conn, "GET", path, headers=headers), tokens, requests, rounds
        )
        conn.close()
    return figures


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--visible", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=200, help="per URL")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--postgres", default=DEFAULT_PG)
    parser.add_argument("--reuse", action="store_true", help=f"keep an existing {DATABASE} database")
    parser.add_argument("--server", action="store_true", help="also through gunicorn on loopback")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args(argv)

    url, fresh = _fresh_database(args.postgres, args.reuse)
    if fresh:
        load(url, args.tasks, args.visible)
    from engine.db import create_db_engine
    from engine.migrate import upgrade

    db = create_db_engine(url)
    upgrade(db)  # a reused database gets new index migrations
    with db.connect() as conn:
        tasks = conn.scalar(text("SELECT count(*) FROM human_task"))
    db.dispose()
    tokens = _tokens(url)
    load_before = os.getloadavg()[0]
    figures, shapes = time_test_client(url, tokens, args.requests, args.rounds)
    runs = {"test client": figures}
    if args.server:
        runs["gunicorn"] = time_server(url, tokens, args.requests, args.rounds)
    previous = json.loads(RESULTS.read_text()) if RESULTS.exists() else None
    report = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {platform.python_implementation()} {platform.python_version()}",
        "tasks": tasks,
        "requests": args.requests,
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "answers": shapes,
        "figures": runs,
    }
    _print(report, previous)
    if not args.no_save:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    return report


def _print(report: dict, previous: dict | None) -> None:
    print(
        f"GET /api/v1/tasks, {report['tasks']:,} task rows, {report['requests']} requests per URL, "
        f"page size 50 ({report['machine']}, load average {report['load_average']})"
    )
    print(
        "| via | user | request | items | total | p50 (ms) | p95 (ms) | p99 (ms) | p95 ≤ 50 ms "
        "| × previous p95 |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|:---:|---:|")
    for via, figures in report["figures"].items():
        for name, f in figures.items():
            who, query = name.split(" ", 1)
            shape = report["answers"][name]
            before = (previous or {}).get("figures", {}).get(via, {}).get(name)
            vs = f"{f['p95_ms'] / before['p95_ms']:.2f}" if before else "–"
            total = "–" if shape["total"] is None else f"{shape['total']:,}"
            ok = "yes" if f["p95_ms"] <= TARGET_P95_MS else "**no**"
            print(
                f"| {via} | {who} | `{query}` | {shape['items']} | {total} | {f['p50_ms']:.1f} "
                f"| {f['p95_ms']:.1f} | {f['p99_ms']:.1f} | {ok} | {vs} |"
            )


if __name__ == "__main__":
    main()
