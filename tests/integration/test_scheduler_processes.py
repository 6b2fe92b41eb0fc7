"""Schedulers as the operations team runs them: several ``baton scheduler`` processes, crashes, outages.

The audit log is the proof: every timer that fires writes one ``timer_fired`` entry in the same
transaction as its effects, so "exactly once" is a count of audit entries per instance.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from xml.sax.saxutils import escape

import pytest
from sqlalchemy import func, select, text

from engine.context import EngineConfig
from engine.db import create_db_engine
from engine.facade import Engine
from engine.models import AuditEntry, Base, HumanTask, Job
from engine.scheduler import JobRunner
from tests import bpmn_builders as b

ROOT = Path(__file__).resolve().parents[2]

TIMERS = 2000
PROCESSES = 3
WINDOW = 3.0  # seconds over which the 2,000 timers come due
LEASE = 5.0  # seconds: how long the killed process's jobs stay leased before the others take them


def reminder_and_sla(pid: str, cycle: str, sla: str) -> bytes:
    """User task ``work`` with two timer boundary events: a non-interrupting ``remind`` cycle that
    opens a ``reminder`` task at each firing, and an interrupting ``sla`` that escalates."""
    body = [
        '<bpmn:startEvent id="start" />',
        '<bpmn:userTask id="work" name="work" />',
        '<bpmn:boundaryEvent id="remind" attachedToRef="work" cancelActivity="false">'
        f"<bpmn:timerEventDefinition><bpmn:timeCycle>{escape(cycle)}</bpmn:timeCycle>"
        "</bpmn:timerEventDefinition></bpmn:boundaryEvent>",
        '<bpmn:boundaryEvent id="sla" attachedToRef="work" cancelActivity="true">'
        f"<bpmn:timerEventDefinition><bpmn:timeDuration>{escape(sla)}</bpmn:timeDuration>"
        "</bpmn:timerEventDefinition></bpmn:boundaryEvent>",
        '<bpmn:userTask id="reminder" name="reminder" />',
        '<bpmn:userTask id="escalated" name="escalated" />',
        '<bpmn:endEvent id="end" />',
        '<bpmn:endEvent id="end_reminder" />',
        '<bpmn:endEvent id="end_escalated" />',
        '<bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="work" />',
        '<bpmn:sequenceFlow id="f2" sourceRef="work" targetRef="end" />',
        '<bpmn:sequenceFlow id="f3" sourceRef="remind" targetRef="reminder" />',
        '<bpmn:sequenceFlow id="f4" sourceRef="reminder" targetRef="end_reminder" />',
        '<bpmn:sequenceFlow id="f5" sourceRef="sla" targetRef="escalated" />',
        '<bpmn:sequenceFlow id="f6" sourceRef="escalated" targetRef="end_escalated" />',
    ]
    return b._process(pid, pid, body)


class TestSchedulerOutage:
    def test_a_missed_reminder_cycle_and_sla_give_one_reminder_and_one_escalation(self, engine):
        """The scheduler is down for a while (a minute in the issue, 5 s here: every time is scaled
        down alike) while a 1 s reminder cycle and a 3.5 s SLA come due. On restart the missed
        reminders collapse into one, fired first since it was due first, then the SLA escalates;
        the occurrences the cycle would have had after the escalation never happen."""
        engine.repository.deploy(
            {"r.bpmn": reminder_and_sla("outage", '"R/PT1S"', '"PT3.5S"')}, deployed_by="d"
        )
        instance = engine.runtime.start("outage")
        time.sleep(5.2)  # no scheduler: reminders due at 1, 2, 3 (4, 5) s and the SLA at 3.5 s pass by

        outcomes = JobRunner(engine, owner="restarted").run_once()

        assert [o.ok for o in outcomes] == [True]
        tasks = engine.tasks.query().instance(instance.id).list()
        assert sorted((t.element_id, t.state) for t in tasks) == [
            ("escalated", "ready"),
            ("reminder", "cancelled"),  # opened, then cancelled with `work` by the interrupting SLA
            ("work", "cancelled"),
        ]
        history = engine.history.for_instance(instance.id)
        fired = [e for e in history if e.action == "timer_fired"]
        assert [(e.element_id, e.actor) for e in fired] == [("remind", "scheduler"), ("sla", "scheduler")]
        assert fired[0].details["skipped_cycles"] == 2  # due at 1, 2 and 3 s: one reminder for the three
        assert "skipped_cycles" not in fired[1].details
        assert all(e.at - datetime.fromisoformat(e.details["due"]) > timedelta(seconds=1.5) for e in fired)
        created = [e.element_id for e in history if e.action == "task_created"]
        assert created == ["work", "reminder", "escalated"]  # in that order: reminder, then escalation
        assert engine.runtime.get(instance.id).next_timer_due is None
        assert JobRunner(engine, owner="again").run_once() == []  # nothing left to fire, no burst later


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def _scheduler(url: str, log: Path) -> subprocess.Popen:
    baton = Path(sys.executable).with_name("baton")
    command = [str(baton)] if baton.exists() else [sys.executable, "-m", "web.cli"]
    command += ["scheduler", "--lease-seconds", str(LEASE), "--interval", "0.25"]
    env = {**os.environ, "DATABASE_URL": url, "SECRET_KEY": "test", "PYTHONUNBUFFERED": "1"}
    with log.open("wb") as out:
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def _truncate(url: str) -> None:
    db = create_db_engine(url)
    tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
    with db.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    db.dispose()


@pytest.mark.slow
class TestSchedulerProcesses:
    def test_three_processes_fire_2000_timers_exactly_once_despite_a_kill_9(self, postgres_url, tmp_path):
        _truncate(postgres_url)
        engine = Engine.from_url(postgres_url, EngineConfig(live_cache_size=0))
        procs: list[subprocess.Popen] = []
        try:
            engine.repository.deploy(
                {
                    "f.bpmn": b.boundary_timer("fanout", "due_at", timer="timeDate"),
                    "i.bpmn": b.linear("idle", ["user:wait"]),
                },
                deployed_by="d",
            )
            procs = [_scheduler(postgres_url, tmp_path / f"scheduler{i}.log") for i in range(PROCESSES)]
            began = time.monotonic()
            with ThreadPoolExecutor(4) as pool:
                # How fast this machine creates instances right now (idle ones: no timer, never loaded).
                list(pool.map(lambda _: engine.runtime.start("idle"), range(100)))
                per_instance = (time.monotonic() - began) / 100
                first_due = datetime.now(UTC) + timedelta(seconds=3 + 1.5 * per_instance * TIMERS)
                planned = [first_due + timedelta(seconds=WINDOW * i / TIMERS) for i in range(TIMERS)]

                def start(due: datetime) -> tuple[str, datetime]:
                    # On a machine slower than measured, a timer is due a second after its creation.
                    due = max(due, datetime.now(UTC) + timedelta(seconds=1))
                    return engine.runtime.start("fanout", variables={"due_at": due.isoformat()}).id, due

                ids, dues = zip(*pool.map(start, planned), strict=True)
            created = time.monotonic() - began
            spread = (max(dues) - min(dues)).total_seconds()
            assert [p.poll() for p in procs] == [None] * PROCESSES, "a scheduler did not start"

            def count(stmt) -> int:
                with engine.db.unit_of_work(write=False) as uow:
                    return uow.session.scalar(stmt)

            fired_count = select(func.count(AuditEntry.id)).where(AuditEntry.action == "timer_fired")
            # the victim: a process caught holding leases once a fifth has fired (whichever: on a
            # loaded machine one of them may start late and hold nothing for a while)
            holders = select(Job.lease_owner).where(Job.lease_owner.is_not(None))
            victim = None
            deadline = time.monotonic() + 60
            while victim is None:
                assert time.monotonic() < deadline, "the schedulers never got going"
                if count(fired_count) >= TIMERS // 5:
                    with engine.db.unit_of_work(write=False) as uow:
                        owners = " ".join(uow.session.scalars(holders))
                    victim = next((p for p in procs if f":{p.pid}:" in owners), None)
                time.sleep(0.02)
            victim.send_signal(signal.SIGKILL)
            killed_at = datetime.now(UTC)
            victim.wait(10)
            fired_at_kill = count(fired_count)
            time.sleep(0.5)  # PostgreSQL notices the dropped connection and rolls its transaction back
            with engine.db.unit_of_work(write=False) as uow:
                victims_jobs = select(Job.instance_id).where(Job.lease_owner.like(f"%:{victim.pid}:%"))
                orphaned = set(uow.session.scalars(victims_jobs))

            deadline = time.monotonic() + 60
            while count(select(func.count()).select_from(Job)):
                assert time.monotonic() < deadline, "jobs left behind"
                assert all(p.poll() is None for p in procs if p is not victim), "a surviving scheduler died"
                time.sleep(0.1)
            drained = time.monotonic() - began

            with engine.db.unit_of_work(write=False) as uow:
                s = uow.session
                fired = s.execute(
                    select(AuditEntry.instance_id, AuditEntry.element_id, AuditEntry.at, AuditEntry.details)
                    .where(AuditEntry.action == "timer_fired")
                    .order_by(AuditEntry.id)
                ).all()
                escalations = s.execute(
                    select(HumanTask.instance_id, func.count())
                    .where(HumanTask.element_id == "escalated", HumanTask.state == "ready")
                    .group_by(HumanTask.instance_id)
                ).all()
                created_escalations = s.scalar(
                    select(func.count())
                    .select_from(AuditEntry)
                    .where(AuditEntry.action == "task_created", AuditEntry.element_id == "escalated")
                )
                open_work = s.scalar(
                    select(func.count()).where(HumanTask.element_id == "work", HumanTask.state == "ready")
                )
                errors = s.scalar(
                    select(func.count()).select_from(AuditEntry).where(AuditEntry.action == "instance_error")
                )
                jobs_left = s.scalar(select(func.count()).select_from(Job))
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGINT)
            for proc in procs:
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            engine.close()

        # Exactly once, from the audit log: one entry per instance, for the timer, and its effect once.
        assert len(fired) == TIMERS
        assert sorted(row.instance_id for row in fired) == sorted(ids)
        assert {row.element_id for row in fired} == {"timer"}
        assert sorted(escalations) == sorted((i, 1) for i in ids)
        assert created_escalations == TIMERS
        assert open_work == 0 and errors == 0 and jobs_left == 0
        # The jobs the killed process held were fired by the others, once, after it died.
        by_instance = {row.instance_id: row.at for row in fired}
        assert all(by_instance[i] > killed_at for i in orphaned)

        lateness = [(row.at - datetime.fromisoformat(row.details["due"])).total_seconds() for row in fired]
        stamps = [row.at for row in fired]
        firing = (max(stamps) - min(stamps)).total_seconds()
        print(
            f"\n{TIMERS} timers due within {spread:.1f} s, {PROCESSES} `baton scheduler` processes "
            f"(lease {LEASE:.0f} s), one killed with SIGKILL after {fired_at_kill} had fired, "
            f"holding {len(orphaned)} leased jobs; instances created in {created:.1f} s, "
            f"all fired {firing:.1f} s after the first, drained {drained:.1f} s after the start\n"
            f"lateness (fired - due) s: p50 {statistics.median(lateness):.3f}  "
            f"p90 {_percentile(lateness, 0.90):.3f}  p99 {_percentile(lateness, 0.99):.3f}  "
            f"max {max(lateness):.3f}  min {min(lateness):.3f}"
        )
        assert min(lateness) >= 0  # nothing fires early
        for i in range(1, PROCESSES):  # the survivors stopped cleanly, with no job failure logged
            log = (tmp_path / f"scheduler{i}.log").read_text()
            assert "Traceback" not in log and "scheduler stopped" in log, log[-3000:]
