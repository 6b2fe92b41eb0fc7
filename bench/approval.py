"""Benchmark: a 3-step approval (start, three user-task completions, end).

Runs, in one process and one run:
  raw       SpiffWorkflow alone, the workflow kept in memory (no persistence at all)
  raw+json  SpiffWorkflow alone, with its stock serializer round-trip per step (embedded spec),
            which is what a raw-engine application does per request
  sqlite    Baton's engine facade on SQLite (WAL, a temporary file)
  postgres  Baton's engine facade on PostgreSQL (skipped when unreachable)

and prints per-instance and per-completion medians, ratios to ``raw`` and ``raw+json``, and the
ratio to the previous recorded run (bench/results/approval.json), which it then replaces.

    python -m bench.approval [--instances N] [--postgres URL] [--no-save]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from SpiffWorkflow.bpmn.serializer.workflow import BpmnWorkflowSerializer
from SpiffWorkflow.bpmn.workflow import BpmnWorkflow
from SpiffWorkflow.spiff.parser.process import SpiffBpmnParser
from SpiffWorkflow.spiff.serializer.config import SPIFF_CONFIG
from SpiffWorkflow.task import TaskState
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parents[1]
PROCESS = ROOT / "processes" / "expense_approval"
RESULTS = Path(__file__).resolve().parent / "results" / "approval.json"
STEPS = [{"amount": 320, "reason": "taxi to customer"}, {"decision": "approve"}, {"decision": "approve"}]
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _raw_spec():
    parser = SpiffBpmnParser()
    parser.add_bpmn_file(str(PROCESS / "expense_approval.bpmn"))
    return parser.get_spec("expense_approval")


def run_raw(instances: int, *, with_json: bool) -> tuple[list[float], list[float]]:
    spec = _raw_spec()
    serializer = BpmnWorkflowSerializer(BpmnWorkflowSerializer.configure(SPIFF_CONFIG))
    per_instance, per_completion = [], []
    for _ in range(instances):
        began = time.perf_counter()
        wf = BpmnWorkflow(spec)
        wf.do_engine_steps()
        state = serializer.serialize_json(wf) if with_json else None
        for data in STEPS:
            t0 = time.perf_counter()
            if with_json:
                wf = serializer.deserialize_json(state)
            task = wf.get_tasks(state=TaskState.READY, manual=True)[0]
            task.data.update(data)
            task.run()
            wf.do_engine_steps()
            if with_json:
                state = serializer.serialize_json(wf)
            per_completion.append(time.perf_counter() - t0)
        assert wf.is_completed()
        per_instance.append(time.perf_counter() - began)
    return per_instance, per_completion


def facade(url: str):
    from engine.context import EngineConfig
    from engine.facade import Engine
    from engine.migrate import upgrade

    engine = Engine.from_url(url, EngineConfig())
    upgrade(engine.db.engine)
    bundle = {f.name: f.read_bytes() for f in PROCESS.iterdir() if f.is_file()}
    engine.repository.deploy(bundle, deployed_by="bench")
    return engine


def run_facade(engine, instances: int) -> tuple[list[float], list[float]]:
    per_instance, per_completion = [], []
    for i in range(instances):
        began = time.perf_counter()
        instance = engine.runtime.start(
            "expense_approval", business_key=f"B-{i}", started_by="bench", variables={"initiator": "bench"}
        )
        for data in STEPS:
            task = engine.tasks.query().instance(instance.id).open().first()
            t0 = time.perf_counter()
            engine.tasks.complete(task.id, actor="bench", data=data)
            per_completion.append(time.perf_counter() - t0)
        per_instance.append(time.perf_counter() - began)
    assert engine.runtime.get(instance.id).state == "completed"
    return per_instance, per_completion


def _fresh_postgres(admin_url: str) -> str | None:
    try:
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
        with admin.connect() as conn:
            conn.execute(text("DROP DATABASE IF EXISTS baton_bench WITH (FORCE)"))
            conn.execute(text("CREATE DATABASE baton_bench"))
        admin.dispose()
    except Exception as exc:  # noqa: BLE001 - reported, the run goes on without PostgreSQL
        print(f"postgres: skipped ({exc.__class__.__name__}: {exc})")
        return None
    return admin_url.rsplit("/", 1)[0] + "/baton_bench"


def _median_us(values: list[float]) -> float:
    return statistics.median(values) * 1e6


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds: noise hits every run")
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--postgres", default=DEFAULT_PG)
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        engines = {"sqlite": facade(f"sqlite:///{tmp}/bench.db")}
        pg = _fresh_postgres(args.postgres)
        if pg:
            engines["postgres"] = facade(pg)
        runs: dict[str, Callable[[int], tuple[list[float], list[float]]]] = {
            "raw": lambda n: run_raw(n, with_json=False),
            "raw+json": lambda n: run_raw(n, with_json=True),
            **{name: (lambda n, e=e: run_facade(e, n)) for name, e in engines.items()},
        }
        samples: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in runs}
        for run in runs.values():
            run(args.warmup)
        per_round = max(args.instances // args.rounds, 1)
        for _ in range(args.rounds):
            for name, run in runs.items():
                per_instance, per_completion = run(per_round)
                samples[name][0].extend(per_instance)
                samples[name][1].extend(per_completion)
        for e in engines.values():
            e.close()
    figures = {
        name: {
            "instance_us": round(_median_us(per_instance), 1),
            "completion_us": round(_median_us(per_completion), 1),
            "instances_per_s": round(len(per_instance) / sum(per_instance), 1),
        }
        for name, (per_instance, per_completion) in samples.items()
    }
    previous = json.loads(RESULTS.read_text()) if RESULTS.exists() else None
    report = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {platform.python_implementation()} {platform.python_version()}",
        "instances": args.instances,
        "figures": figures,
    }
    _print(report, previous)
    if not args.no_save:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    return report


def _print(report: dict, previous: dict | None) -> None:
    figures = report["figures"]
    raw, raw_json = figures["raw"]["completion_us"], figures["raw+json"]["completion_us"]
    print(f"3-step approval, {report['instances']} instances, medians ({report['machine']})")
    header = (
        "| run | per instance (µs) | per completion (µs) | × raw | × raw+json | instances/s | × previous |"
    )
    print(header)
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, f in figures.items():
        before = (previous or {}).get("figures", {}).get(name)
        vs_previous = f"{f['completion_us'] / before['completion_us']:.2f}" if before else "–"
        print(
            f"| {name} | {f['instance_us']:.0f} | {f['completion_us']:.0f} | {f['completion_us'] / raw:.2f} "
            f"| {f['completion_us'] / raw_json:.2f} | {f['instances_per_s']:.0f} | {vs_previous} |"
        )


if __name__ == "__main__":
    main()
