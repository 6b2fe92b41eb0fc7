"""Benchmark: the managers' instance list (GET /manage/instances) over 100,000 instances on PostgreSQL.

Loads (COPY) ``--instances`` process instances of 5 processes (2 versions each) started over a year
by 1,000 people in 24 departments (4 divisions of 5 teams, the divisions' own staff included):
30 % running with one open task (a fifth of those past their due date), 3 % suspended, 5 % failed,
55 % completed, 7 % cancelled; each finished one has two completed tasks, each instance an engine
state of ~3.7 KB. Then it times, through Flask's test client with a logged-in session,
``--requests`` sequential requests of each list URL (filters and sorts, see REQUESTS) as a team's
manager (~4,000 instances), a division's manager (~20,000) and an administrator (all), and prints
p50 / p95 / p99 against the 300 ms target, compared with the previous run
(bench/results/instances.json, rewritten unless ``--no-save``).

    python -m bench.instances [--instances 100000] [--requests 40] [--reuse]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import create_engine, text

from bench import common
from bench.common import PASSWORD, percentiles, uuid4

DATABASE = "baton_instances_bench"
TARGET_P95_MS = 300.0
KEYS = ("expense_approval", "leave_request", "purchase_request", "contract_review", "payment_audit")
STEPS = ("submit", "manager_approval", "finance_review")
TEAM_MANAGER, DIVISION_MANAGER, ADMIN = "lead_0_0", "head_0", "admin"
STATE_MIX = (("running", 30), ("suspended", 3), ("error", 5), ("completed", 55), ("cancelled", 7))
INSTANCE_COLUMNS = (*common.INSTANCE_COLUMNS, "starter_department_id")
TASK_COLUMNS = (*common.TASK_COLUMNS, "offers")
ENGINE_STATE = json.dumps({"padding": "x" * 3700})  # the size of a stored approval (ENGINE-NOTES)
# (who, query string of GET /manage/instances); "{...}" is filled from the loaded data
REQUESTS = [
    (TEAM_MANAGER, ""),
    (TEAM_MANAGER, "?state=running"),
    (TEAM_MANAGER, "?business_key={team_key}"),
    (TEAM_MANAGER, "?process=leave_request&version=2"),
    (TEAM_MANAGER, "?sla=breached"),
    (TEAM_MANAGER, "?process=expense_approval&step=manager_approval"),
    (TEAM_MANAGER, "?started_from={month_ago}&started_to={today}"),
    (TEAM_MANAGER, "?starter={team_member}"),
    (TEAM_MANAGER, "?sort=ended"),
    (TEAM_MANAGER, "?page=20"),
    (DIVISION_MANAGER, ""),
    (DIVISION_MANAGER, "?department={team}&state=error"),
    (DIVISION_MANAGER, "?sla=breached&sort=started_asc"),
    (ADMIN, ""),
    (ADMIN, "?business_key={any_key}"),
    (ADMIN, "?state=running&sort=started_asc"),
    (ADMIN, "?sort=ended"),
    (ADMIN, "?department={division}"),
    (ADMIN, "?sla=breached"),
    (ADMIN, "?process=contract_review&step=finance_review"),
    (ADMIN, "?ended_from={month_ago}&ended_to={today}"),
    (ADMIN, "?starter={team_member}&state=completed"),
    (ADMIN, "?page=50"),
]


def _organisation(engine) -> dict[str, int]:
    """4 divisions of 5 teams; 1,000 people; a manager per team and per division; an administrator.
    Returns username -> department id."""
    identity = engine.identity
    identity.create_user(ADMIN, PASSWORD, role="admin")
    members: dict[str, int] = {}
    for d in range(4):
        division = identity.create_department(f"division{d}")
        identity.create_user(f"head_{d}", PASSWORD, role="manager", department=division.id)
        identity.set_department_manager(division.id, f"head_{d}")
        members[f"head_{d}"] = division.id
        for t in range(5):
            team = identity.create_department(f"team{d}_{t}", parent=division.id)
            identity.create_user(f"lead_{d}_{t}", PASSWORD, role="manager", department=team.id)
            identity.set_department_manager(team.id, f"lead_{d}_{t}")
            members[f"lead_{d}_{t}"] = team.id
    departments = sorted(set(members.values()))
    with engine.db.engine.begin() as conn:  # the staff, in one statement (hashing 1,000 passwords is slow)
        password = conn.scalar(
            text("SELECT password_hash FROM user_account WHERE username = :u"), {"u": ADMIN}
        )
        now = datetime.now(UTC)
        rows = [
            {"u": f"user{n}", "p": password, "d": departments[n % len(departments)], "now": now}
            for n in range(1000)
        ]
        conn.execute(
            text(
                "INSERT INTO user_account (username, password_hash, role, state, locale, department_id, "
                "created_at, updated_at, version) "
                "VALUES (:u, :p, 'employee', 'active', 'zh_CN', :d, :now, :now, 1)"
            ),
            rows,
        )
    members.update({r["u"]: r["d"] for r in rows})
    return members


def load(url: str, count: int) -> None:
    """Migrate, deploy, build the organisation, COPY the instances and their tasks."""
    engine = common.migrated_engine(url)
    bundle = common.process_bundle()
    for key in KEYS:  # two versions of five processes
        files = {n: c.replace(b"expense_approval", key.encode()) for n, c in bundle.items()}
        engine.repository.deploy(files, deployed_by="bench")
        engine.repository.deploy({**files, "notes.json": b"{}"}, deployed_by="bench")
    members = _organisation(engine)
    people = sorted(u for u in members if u.startswith("user"))
    rng, now = random.Random(20261130), datetime.now(UTC)
    began = time.perf_counter()
    raw = engine.db.engine.raw_connection()
    try:
        pg = raw.driver_connection
        with pg.cursor() as cur:
            definitions = {
                (key, version): definition_id
                for definition_id, key, version in cur.execute(
                    "SELECT id, key, version FROM process_definition"
                )
            }
            states = [s for s, share in STATE_MIX for _ in range(share)]
            pending = []  # one COPY at a time on a connection: the tasks follow the instances
            with cur.copy(f"COPY process_instance ({', '.join(INSTANCE_COLUMNS)}) FROM STDIN") as instances:
                for n in range(count):
                    instance_id, key, state = uuid4(rng), rng.choice(KEYS), rng.choice(states)
                    starter = rng.choice(people)
                    started = now - timedelta(seconds=rng.uniform(0, 365 * 86400))
                    finished = state in ("completed", "cancelled")
                    ended = min(started + timedelta(hours=rng.uniform(1, 200)), now) if finished else None
                    updated = ended or min(started + timedelta(hours=rng.uniform(0, 48)), now)
                    error = ("finance_review", "ZeroDivisionError") if state == "error" else (None, None)
                    instances.write_row(
                        (
                            instance_id, definitions[(key, rng.choice((1, 2)))], key, f"BK-{n:07d}", state,
                            starter, started, updated, ended, ENGINE_STATE, "baton-1", None, *error,
                            None, 3, members[starter],
                        )
                    )  # fmt: skip
                    pending.extend(_tasks(rng, instance_id, key, state, starter, started, ended, now))
            with cur.copy(f"COPY human_task ({', '.join(TASK_COLUMNS)}) FROM STDIN") as human_tasks:
                for row in pending:
                    human_tasks.write_row(row)
            tasks = len(pending)
        pg.commit()
        common.vacuum(pg, ("process_instance", "human_task", "user_account", "department"))
    finally:
        raw.close()
    engine.close()
    print(f"loaded {count:,} instances and {tasks:,} tasks in {time.perf_counter() - began:.0f} s")


def _tasks(rng, instance_id, key, state, starter, started, ended, now):
    """An open task for a running, suspended or failed instance; two completed ones once finished."""
    offers = json.dumps({"users": [], "groups": ["managers"]})
    if state in ("running", "suspended", "error"):
        created = started + timedelta(hours=rng.uniform(0, 24))
        created = min(created, now)
        due = created + timedelta(days=2) if rng.random() < 0.8 else None
        if due is not None and rng.random() < 0.2:
            due = now - timedelta(hours=rng.uniform(1, 100))  # past due
        warn = created + (due - created) * 0.8 if due and due > created else due
        element = rng.choice(STEPS)
        yield (
            uuid4(rng), instance_id, key, element, element, None, None, due, warn, 50, None, "ready",
            created, None, None, None, None, 1, offers,
        )  # fmt: skip
        return
    for element in STEPS[:2]:
        yield (
            uuid4(rng), instance_id, key, element, element, None, starter, None, None, 50, None, "completed",
            started, starter, started, starter, ended, 2, offers,
        )  # fmt: skip


def _samples(url: str) -> dict[str, str]:
    """Values to fill into REQUESTS (a key in the team's scope, one of its people, ...)."""
    engine = create_engine(url)
    with engine.connect() as conn:
        team = conn.scalar(
            text("SELECT department_id FROM user_account WHERE username = :u"), {"u": TEAM_MANAGER}
        )
        division = conn.scalar(text("SELECT department_id FROM user_account WHERE username = 'head_0'"))
        team_key, member = conn.execute(
            text(
                "SELECT business_key, started_by FROM process_instance WHERE starter_department_id = :d "
                "ORDER BY business_key LIMIT 1 OFFSET 100"
            ),
            {"d": team},
        ).one()
        any_key = conn.scalar(
            text("SELECT business_key FROM process_instance ORDER BY id LIMIT 1 OFFSET 5000")
        )
        scope = conn.scalar(
            text("SELECT count(*) FROM process_instance WHERE starter_department_id = :d"), {"d": team}
        )
    engine.dispose()
    today = datetime.now(UTC).date()
    print(f"{TEAM_MANAGER}'s department holds {scope:,} instances")
    return {
        "team": str(team),
        "division": str(division),
        "team_key": team_key,
        "any_key": any_key,
        "team_member": member,
        "today": today.isoformat(),
        "month_ago": (today - timedelta(days=30)).isoformat(),
    }


def time_pages(url: str, values: dict[str, str], requests: int, rounds: int) -> tuple[dict, dict]:
    """Each list URL, as its user, through the test client; interleaved rounds (machine noise hits
    every URL alike). Returns percentiles and how many rows each page showed."""
    app = common.bench_app(url, CSRF_DISABLED=True)
    clients = {who: common.logged_in(app, who) for who in dict.fromkeys(w for w, _q in REQUESTS)}
    urls = [(who, "/manage/instances" + query.format(**values)) for who, query in REQUESTS]
    samples: dict[str, list[float]] = {f"{w} {u}": [] for w, u in urls}
    shown = {}
    try:
        for who, path in urls:  # warm-up, and what each URL answers
            for _ in range(3):
                answer = clients[who].get(path)
            assert answer.status_code == 200, (path, answer.status_code)
            shown[f"{who} {path}"] = answer.get_data(as_text=True).count('class="task-item"')
        per_round = max(requests // rounds, 1)
        for _ in range(rounds):
            for who, path in urls:
                for _ in range(per_round):
                    t0 = time.perf_counter()
                    status = clients[who].get(path).status_code
                    samples[f"{who} {path}"].append(time.perf_counter() - t0)
                    assert status == 200
    finally:
        app.extensions["baton.engine"].close()
    return {name: percentiles(s) for name, s in samples.items()}, shown


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=40, help="per URL")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds")
    common.add_database_arguments(parser, DATABASE)
    args = parser.parse_args(argv)

    url, fresh = common.fresh_database(args.postgres, DATABASE, args.reuse)
    if fresh:
        load(url, args.instances)
    instances = common.upgrade_and_count(url, ("process_instance",))["process_instance"]
    values = _samples(url)
    load_before = os.getloadavg()[0]
    figures, shown = time_pages(url, values, args.requests, args.rounds)
    previous = common.previous_report("instances")
    report = {
        **common.machine_facts(),
        "instances": instances,
        "requests": args.requests,
        "load_average": common.load_span(load_before),
        "shown": shown,
        "figures": figures,
    }
    _print(report, previous)
    if not args.no_save:
        common.save_report("instances", report)
    return report


def _print(report: dict, previous: dict | None) -> None:
    print(
        f"GET /manage/instances, {report['instances']:,} instances, {report['requests']} requests per URL, "
        f"pages of 25 ({report['machine']}, load average {report['load_average']})"
    )
    print("| user | request | rows | p50 (ms) | p95 (ms) | p99 (ms) | p95 ≤ 300 ms | × previous p95 |")
    print("|---|---|---:|---:|---:|---:|:---:|---:|")
    for name, f in report["figures"].items():
        who, path = name.split(" ", 1)
        before = (previous or {}).get("figures", {}).get(name)
        ok, vs = common.verdict(f, before, TARGET_P95_MS)
        query = path.removeprefix("/manage/instances") or "(default)"
        print(
            f"| {who} | `{query}` | {report['shown'][name]} | {f['p50_ms']:.1f} | {f['p95_ms']:.1f} "
            f"| {f['p99_ms']:.1f} | {ok} | {vs} |"
        )


if __name__ == "__main__":
    main()
