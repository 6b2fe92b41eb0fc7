"""Benchmark: the measures dashboard of one process with 100,000 instances on PostgreSQL.

Loads (COPY) ``--instances`` instances of the shipped expense approval, started over the last 365
days by 1,000 people in 20 departments (50 of them in the one ``bench_manager`` manages), with
their human tasks as the engine writes them: submit, manager approval (due in 2 days), finance review (due in
3 days) for the 80 % approved; the last two weeks' instances mostly still open, the rest completed
(8 % cancelled), about 12 % of the due tasks late. Every instance row carries a real serialized
engine state (as before retention), so the table has its real width. The database triggers write
the measures' tally rows as the rows are copied; the load ends with the settle the scheduler does
every minute.

Then it times, interleaved in rounds: ``engine.measures.figures`` (every figure of the process: the
engine alone) and GET /measures/expense_approval (the whole dashboard page: figures, charts, page)
and GET /api/v1/measures/expense_approval through Flask's test client, each for the default range
(the last 30 days) and for the whole year, as an administrator (every instance) and as the manager
(their department's 5 %), and prints p50 / p95 / p99 against the 300 ms target, compared with the
previous run (bench/results/measures.json, rewritten unless ``--no-save``).

    python -m bench.measures [--instances 100000] [--requests 60] [--reuse]
"""

from __future__ import annotations

import argparse
import os
import random
import time
from datetime import UTC, date, datetime, timedelta

from bench import common
from bench.common import PASSWORD, TASK_COLUMNS, percentiles, uuid4

DATABASE = "baton_measures_bench"
INSTANCE_COLUMNS = (*common.INSTANCE_COLUMNS, "starter_department_id")
PEOPLE_PER_DEPARTMENT = 50  # 1,000 people in 20 departments; the first is the manager's
KEY = "expense_approval"
ADMIN, MANAGER = "bench_admin", "bench_manager"
TARGET_P95_MS = 300.0
TIME_ZONE = "Asia/Shanghai"
STEPS = (  # element, name, lane, due after, form
    ("submit", "填写报销单 Fill in the claim", "employee", None, "expense_claim.json"),
    (
        "manager_approval",
        "主管审批 Manager approval",
        "managers",
        timedelta(days=2),
        "approval_decision.json",
    ),
    ("finance_review", "财务复核 Finance review", "finance", timedelta(days=3), "approval_decision.json"),
)


def _instance(rng: random.Random, now: datetime):
    """One instance's (state, started, ended, [task rows without ids]) as the engine would leave it."""
    started = now - timedelta(seconds=rng.uniform(0, 365 * 86400))
    recent = now - started < timedelta(days=14)
    approved = rng.random() < 0.8
    steps = STEPS if approved else STEPS[:2]
    tasks, at, state = [], started, "completed"
    for index, (element, name, lane, due_after, form) in enumerate(steps):
        due = at + due_after if due_after else None
        wait = timedelta(hours=rng.expovariate(1 / (2 if index == 0 else 20)))
        if due is not None and rng.random() < 0.12:  # late
            wait = (due - at) + timedelta(hours=rng.uniform(1, 48))
        done = at + wait
        open_now = done > now or (recent and rng.random() < 0.3)
        cancel = not open_now and index > 0 and rng.random() < 0.04
        task = {"element": element, "name": name, "lane": lane, "due": due, "form": form, "created": at}
        if open_now:
            tasks.append({**task, "state": "ready", "done": None, "by": None})
            return "running", started, None, tasks
        if cancel:
            tasks.append({**task, "state": "cancelled", "done": done, "by": None})
            return "cancelled", started, done, tasks
        tasks.append({**task, "state": "completed", "done": done, "by": f"user{rng.randrange(1000)}"})
        at = done
    return state, started, at, tasks


def load(url: str, count: int) -> None:
    """Migrate, deploy, create the users and departments, take a real engine state, COPY the rest."""
    engine = common.migrated_engine(url)
    engine.repository.deploy(common.process_bundle(), deployed_by="bench")
    identity = engine.identity
    identity.create_user(ADMIN, PASSWORD, role="admin", locale="en")
    identity.create_user(MANAGER, PASSWORD, role="manager", department="Bench Sales", create_missing=True)
    identity.set_department_manager("Bench Sales", MANAGER)
    for n in range(PEOPLE_PER_DEPARTMENT):
        identity.create_user(f"user{n}", PASSWORD, role="employee", department="Bench Sales")
    sample = engine.runtime.start(KEY, started_by="user0", variables={"initiator": "user0"})
    sales = next(d.id for d in identity.departments().list() if d.name == "Bench Sales")
    rng, now = random.Random(20261130), datetime.now(UTC)
    began = time.perf_counter()
    raw = engine.db.engine.raw_connection()
    try:
        pg = raw.driver_connection
        with pg.cursor() as cur:
            state_json, definition_id = cur.execute(
                "SELECT engine_state, definition_id FROM process_instance WHERE id = %s", (sample.id,)
            ).fetchone()
            cur.execute("DELETE FROM process_instance WHERE id = %s", (sample.id,))
            tasks = 0
            rows = [(uuid4(rng), *_instance(rng, now)) for _ in range(count)]
            with cur.copy(f"COPY process_instance ({', '.join(INSTANCE_COLUMNS)}) FROM STDIN") as instances:
                for i, (instance_id, state, started, ended, _) in enumerate(rows):
                    person = rng.randrange(1000)  # the other departments are ids on the instances only
                    instances.write_row(
                        (
                            instance_id, definition_id, KEY, f"EXP-{i}", state, f"user{person}",
                            started, ended or started, ended, state_json, "bench", None, None, None, None, 1,
                            sales + person // PEOPLE_PER_DEPARTMENT,
                        )
                    )  # fmt: skip
            with cur.copy(f"COPY human_task ({', '.join(TASK_COLUMNS)}) FROM STDIN") as task_copy:
                for instance_id, _, _, _, found in rows:
                    for t in found:
                        warn = t["created"] + (t["due"] - t["created"]) * 0.8 if t["due"] else None
                        task_copy.write_row(
                            (
                                uuid4(rng), instance_id, KEY, t["element"], t["name"], t["lane"], t["by"],
                                t["due"], warn, 50, t["form"], t["state"], t["created"], None, None, t["by"],
                                t["done"], 1,
                            )
                        )  # fmt: skip
                        tasks += 1
        pg.commit()
        seconds = time.perf_counter() - began
        began = time.perf_counter()
        folded = engine.measures.settle()  # what the scheduler does every minute
        settle_seconds = time.perf_counter() - began
        common.vacuum(pg, ("process_instance", "human_task", "measure_tally"))
    finally:
        raw.close()
    engine.close()
    print(
        f"loaded {count:,} instances and {tasks:,} tasks in {seconds:.0f} s (their tally rows by the "
        f"triggers); settled {folded:,} tally rows in {settle_seconds:.1f} s"
    )


def _cases(today: date) -> list[tuple[str, str, dict[str, str]]]:
    """(name, who, query) of each timed dashboard."""
    year = {"from": (today - timedelta(days=364)).isoformat(), "to": today.isoformat()}
    return [
        ("admin, last 30 days", ADMIN, {}),
        ("admin, 365 days (weeks)", ADMIN, year),
        ("manager, last 30 days", MANAGER, {}),
        ("manager, 365 days (weeks)", MANAGER, year),
    ]


def run(url: str, requests: int, rounds: int) -> dict:
    from urllib.parse import urlencode

    from engine.measures import local_range
    from web.measures import Filters, read_filters

    app = common.bench_app(url, CSRF_DISABLED=True)
    engine = app.extensions["baton.engine"]
    clients, tokens = {}, {}
    for who in (ADMIN, MANAGER):
        client = clients[who] = common.logged_in(app, who)
        token = client.post("/api/v1/auth/token", json={"username": who, "password": PASSWORD}).get_json()
        tokens[who] = {"Authorization": f"Bearer {token['token']}"}
    sales = [d.id for d in engine.identity.departments().list() if d.name == "Bench Sales"]
    departments = {ADMIN: None, MANAGER: sales}

    def engine_call(who: str, query: dict[str, str]) -> None:
        with app.test_request_context(f"/?{urlencode(query)}"):
            filters: Filters = read_filters(query)[0]
        start, end = local_range(filters.first, filters.last, TIME_ZONE)
        engine.measures.figures(KEY, start=start, end=end, departments=departments[who], time_zone=TIME_ZONE)

    def page(who: str, query: dict[str, str]) -> None:
        answer = clients[who].get(f"/measures/{KEY}?{urlencode(query)}")
        assert answer.status_code == 200, answer.status_code

    def api(who: str, query: dict[str, str]) -> None:
        answer = clients[who].get(f"/api/v1/measures/{KEY}?{urlencode(query)}", headers=tokens[who])
        assert answer.status_code == 200, answer.status_code

    today = datetime.now(UTC).date()
    cases = _cases(today)
    ways = {
        "engine.measures.figures": engine_call,
        "GET /measures/{key} (page)": page,
        "GET /api/v1/measures/{key}": api,
    }
    samples = {f"{way} | {name}": [] for way in ways for name, _, _ in cases}
    shapes = {}
    for name, who, query in cases:  # warm-up, and what each case covers
        for _ in range(3):
            for call in ways.values():
                call(who, query)
        body = clients[who].get(f"/api/v1/measures/{KEY}?{urlencode(query)}", headers=tokens[who]).get_json()
        shapes[name] = {"started": body["started"], "finished": body["finished"], "steps": len(body["steps"])}
    per_round = max(requests // rounds, 1)
    for _ in range(rounds):
        for way, call in ways.items():
            for name, who, query in cases:
                for _ in range(per_round):
                    t0 = time.perf_counter()
                    call(who, query)
                    samples[f"{way} | {name}"].append(time.perf_counter() - t0)
    engine.close()
    return {"figures": {key: percentiles(s) for key, s in samples.items()}, "answers": shapes}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=60, help="per case")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    common.add_database_arguments(parser, DATABASE)
    args = parser.parse_args(argv)

    url, fresh = common.fresh_database(args.postgres, DATABASE, args.reuse)
    if fresh:
        load(url, args.instances)
    counts = common.upgrade_and_count(url, ("process_instance", "human_task", "measure_tally"))
    load_before = os.getloadavg()[0]
    measured = run(url, args.requests, args.rounds)
    previous = common.previous_report("measures")
    report = {
        **common.machine_facts(),
        "instances": counts["process_instance"],
        "tasks": counts["human_task"],
        "tally_rows": counts["measure_tally"],
        "requests": args.requests,
        "load_average": common.load_span(load_before),
        **measured,
    }
    _print(report, previous)
    if not args.no_save:
        common.save_report("measures", report)
    return report


def _print(report: dict, previous: dict | None) -> None:
    print(
        f"measures of {KEY}: {report['instances']:,} instances, {report['tasks']:,} tasks "
        f"({report['tally_rows']:,} tally rows), "
        f"{report['requests']} requests per case ({report['machine']}, load average {report['load_average']})"
    )
    for name, shape in report["answers"].items():
        print(
            f"  {name}: {shape['started']:,} started, {shape['finished']:,} finished, {shape['steps']} steps"
        )
    print("| what | case | p50 (ms) | p95 (ms) | p99 (ms) | p95 ≤ 300 ms | × previous p95 |")
    print("|---|---|---:|---:|---:|:---:|---:|")
    for key, f in report["figures"].items():
        way, name = key.split(" | ", 1)
        before = (previous or {}).get("figures", {}).get(key)
        ok, vs = common.verdict(f, before, TARGET_P95_MS)
        print(f"| {way} | {name} | {f['p50_ms']:.1f} | {f['p95_ms']:.1f} | {f['p99_ms']:.1f} | {ok} | {vs} |")


if __name__ == "__main__":
    main()
