"""Benchmark: GET /api/v1/tasks for one user with 100,000 open tasks in a 1,000,000-row task table.

Loads (COPY, PostgreSQL only) a task table of ``--tasks`` rows of which ``--visible`` open tasks are
visible to the user ``bench`` (groups ``bench_team`` and ``reviewers``):

  20 %  assigned to bench (half of them claimed from the bench_team pool: candidate rows kept)
  50 %  unassigned, offered to bench_team (35 %) or reviewers (15 %)
  30 %  unassigned, offered to bench as a candidate user
and, for everybody else (the rest of the rows):
  1/6   open, assigned to one of 1,000 other users (a fifth of them claimed from bench_team's pool)
  1/6   open, unassigned, offered to one of 200 other groups
  2/3   completed (a sixth of them offered to bench_team, 10,000 completed by bench)

80 % of the tasks have a due date (a third of those already breached), the tasks share 5,000
instances (1 % with a paused SLA clock). Then it times, through Flask's test client (and with
``--server`` also through a real gunicorn on loopback), ``--requests`` sequential requests of
each inbox URL with a bearer token and prints p50 / p95 / p99, compared with the previous run
(bench/results/inbox.json, rewritten unless ``--no-save``).

    python -m bench.inbox [--tasks 1000000] [--visible 100000] [--requests 200] [--reuse] [--server]
"""

from __future__ import annotations

import argparse
import json
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

# name -> query string of GET /api/v1/tasks
URLS = {
    "all": "",
    "mine": "?scope=mine",
    "group": "?scope=group",
    "sla=breached": "?sla=breached",
    "all, count=true": "?count=true",
    "all, page 20": "?page=20",
    "priority": "?sort=priority",
}
TASK_COLUMNS = (
    "id", "instance_id", "definition_key", "element_id", "name", "lane", "assignee", "due_at", "warn_at",
    "priority", "form_key", "state", "created_at", "claimed_by", "claimed_at", "completed_by",
    "completed_at", "version",
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
    token, _ = engine.identity.create_token(USER, "bench")
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
                    tasks.write_row(row)
                    rows += 1
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
    return {"token": token}


def _token(url: str) -> str:
    """A fresh token for a reused database (only the hash of the loaded one is stored)."""
    from engine.context import EngineConfig
    from engine.facade import Engine

    engine = Engine.from_url(url, EngineConfig())
    token, _ = engine.identity.create_token(USER, f"bench-{uuid.uuid4().hex[:8]}")
    engine.close()
    return token


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    cuts = statistics.quantiles(ordered, n=100, method="inclusive")
    return {
        "p50_ms": round(statistics.median(ordered) * 1e3, 2),
        "p95_ms": round(cuts[94] * 1e3, 2),
        "p99_ms": round(cuts[98] * 1e3, 2),
        "max_ms": round(ordered[-1] * 1e3, 2),
    }


def time_test_client(url: str, token: str, requests: int, rounds: int) -> tuple[dict, dict]:
    from web.app import create_app

    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "SECRET_KEY": "bench", "SCHEDULER_ENABLED": False})
    client = app.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    samples: dict[str, list[float]] = {name: [] for name in URLS}
    shapes = {}
    for name, query in URLS.items():  # warm-up, and what each URL answers
        for _ in range(5):
            answer = client.get(f"/api/v1/tasks{query}", headers=headers)
        assert answer.status_code == 200, answer.get_json()
        body = answer.get_json()
        shapes[name] = {"items": len(body["items"]), "total": body.get("total")}
    per_round = max(requests // rounds, 1)
    for _ in range(rounds):  # interleaved: machine noise hits every URL alike
        for name, query in URLS.items():
            for _ in range(per_round):
                t0 = time.perf_counter()
                answer = client.get(f"/api/v1/tasks{query}", headers=headers)
                samples[name].append(time.perf_counter() - t0)
                assert answer.status_code == 200
    app.extensions["baton.engine"].close()
    return {name: percentiles(s) for name, s in samples.items()}, shapes


def time_server(url: str, token: str, requests: int, rounds: int) -> dict:
    from bench.http_approval import Server, http_call

    with Server(url, workers=2, threads=4) as server:
        conn = server.connection()
        headers = {"Authorization": f"Bearer {token}"}
        samples: dict[str, list[float]] = {name: [] for name in URLS}
        for query in URLS.values():
            for _ in range(5):
                http_call(conn, "GET", f"/api/v1/tasks{query}", headers=headers)
        per_round = max(requests // rounds, 1)
        for _ in range(rounds):
            for name, query in URLS.items():
                for _ in range(per_round):
                    t0 = time.perf_counter()
                    status, _ = http_call(conn, "GET", f"/api/v1/tasks{query}", headers=headers)
                    samples[name].append(time.perf_counter() - t0)
                    assert status == 200
        conn.close()
    return {name: percentiles(s) for name, s in samples.items()}


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
    token = load(url, args.tasks, args.visible)["token"] if fresh else _token(url)
    from engine.db import create_db_engine
    from engine.migrate import upgrade

    db = create_db_engine(url)
    upgrade(db)  # a reused database gets new index migrations
    with db.connect() as conn:
        tasks = conn.scalar(text("SELECT count(*) FROM human_task"))
    db.dispose()
    runs = {"test client": time_test_client(url, token, args.requests, args.rounds)}
    shapes = runs["test client"][1]
    runs["test client"] = runs["test client"][0]
    if args.server:
        runs["gunicorn"] = time_server(url, token, args.requests, args.rounds)
    previous = json.loads(RESULTS.read_text()) if RESULTS.exists() else None
    report = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {platform.python_implementation()} {platform.python_version()}",
        "tasks": tasks,
        "requests": args.requests,
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
        f"GET /api/v1/tasks as '{USER}', {report['tasks']:,} task rows, {report['requests']} requests "
        f"per URL, page size 50 ({report['machine']})"
    )
    print("| via | request | items | total | p50 (ms) | p95 (ms) | p99 (ms) | p95 ≤ 50 ms | × previous p95 |")
    print("|---|---|---:|---:|---:|---:|---:|:---:|---:|")
    for via, figures in report["figures"].items():
        for name, f in figures.items():
            shape = report["answers"][name]
            before = (previous or {}).get("figures", {}).get(via, {}).get(name)
            vs = f"{f['p95_ms'] / before['p95_ms']:.2f}" if before else "–"
            total = "–" if shape["total"] is None else f"{shape['total']:,}"
            ok = "yes" if f["p95_ms"] <= TARGET_P95_MS else "**no**"
            print(
                f"| {via} | `{URLS[name] or '(default)'}` | {shape['items']} | {total} | {f['p50_ms']:.1f} "
                f"| {f['p95_ms']:.1f} | {f['p99_ms']:.1f} | {ok} | {vs} |"
            )


if __name__ == "__main__":
    main()
