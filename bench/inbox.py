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
import random
import time
import uuid
from datetime import UTC, datetime, timedelta

from bench import common
from bench.common import PASSWORD, percentiles, uuid4

DATABASE = "baton_inbox_bench"
USER, GROUPS = "bench", ("bench_team", "reviewers")
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
TASK_COLUMNS = (*common.TASK_COLUMNS, "offers")
INSTANCE_COLUMNS = common.INSTANCE_COLUMNS


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
                    uuid4(rng), rng.choice(instance_ids), "expense_approval", element, element, None, who,
                    due, warn, rng.choice((30, 50, 50, 50, 80)), "approval_decision.json", state, created,
                    who if (assignee and cands) else None, created if (assignee and cands) else None,
                    done_by, done_at, 1,
                ),
                cands,
            )  # fmt: skip


def load(url: str, total: int, visible: int) -> dict:
    """Migrate, deploy, create the bench user and its token, COPY the instances and tasks."""
    engine = common.migrated_engine(url)
    engine.repository.deploy(common.process_bundle(), deployed_by="bench")
    engine.identity.create_user(USER, PASSWORD, role="employee", groups=GROUPS, create_missing=True)
    engine.identity.create_user(OTHER, PASSWORD, role="employee", groups=OTHER_GROUPS, create_missing=True)
    rng, now = random.Random(20261124), datetime.now(UTC)
    began = time.perf_counter()
    raw = engine.db.engine.raw_connection()
    try:
        pg = raw.driver_connection
        with pg.cursor() as cur:
            definition_id = cur.execute("SELECT id FROM process_definition LIMIT 1").fetchone()[0]
            instance_ids = [uuid4(rng) for _ in range(INSTANCES)]
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
        common.vacuum(pg, ("process_instance", "human_task", "task_candidate"))
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
    app = common.bench_app(url)
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
    parser.add_argument("--server", action="store_true", help="also through gunicorn on loopback")
    common.add_database_arguments(parser, DATABASE)
    args = parser.parse_args(argv)

    url, fresh = common.fresh_database(args.postgres, DATABASE, args.reuse)
    if fresh:
        load(url, args.tasks, args.visible)
    tasks = common.upgrade_and_count(url, ("human_task",))["human_task"]
    tokens = _tokens(url)
    load_before = os.getloadavg()[0]
    figures, shapes = time_test_client(url, tokens, args.requests, args.rounds)
    runs = {"test client": figures}
    if args.server:
        runs["gunicorn"] = time_server(url, tokens, args.requests, args.rounds)
    previous = common.previous_report("inbox")
    report = {
        **common.machine_facts(),
        "tasks": tasks,
        "requests": args.requests,
        "load_average": common.load_span(load_before),
        "answers": shapes,
        "figures": runs,
    }
    _print(report, previous)
    if not args.no_save:
        common.save_report("inbox", report)
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
            ok, vs = common.verdict(f, before, TARGET_P95_MS)
            total = "–" if shape["total"] is None else f"{shape['total']:,}"
            print(
                f"| {via} | {who} | `{query}` | {shape['items']} | {total} | {f['p50_ms']:.1f} "
                f"| {f['p95_ms']:.1f} | {f['p99_ms']:.1f} | {ok} | {vs} |"
            )


if __name__ == "__main__":
    main()
