"""Moving running instances to a newer version of their process (engine/version_migration.py), on
SQLite and PostgreSQL: the pre-check, a batch, what happens to open tasks, timers, failed instances and
the cached workflows, and the managers' migration page."""

from __future__ import annotations

import re
import time

import pytest

from engine.context import EngineConfig
from engine.errors import ConflictError
from engine.facade import Engine
from engine.scheduler import JobRunner
from tests import bpmn_builders as b

PASSWORD = "s3cret-pass"
V1 = b.linear("claim", ["user:submit", "user:review", "user:approve"])
V2 = b.linear("claim", ["user:submit", "user:check", "user:review"])  # approve gone, check added


def waiting_at(engine, instance_id: str) -> list[str]:
    return [t.element_id for t in engine.tasks.query().instance(instance_id).open().list()]


def advance_to(engine, step: str, *, key: str):
    """An instance of ``claim`` v1 waiting at ``step``."""
    instance = engine.runtime.start("claim", business_key=key, started_by="li")
    while waiting_at(engine, instance.id) != [step]:
        task = engine.tasks.query().instance(instance.id).open().first()
        engine.tasks.complete(task.id, actor="li")
    return instance


def finish(engine, instance_id: str) -> list[str]:
    """Complete open tasks until the instance ends; the steps it went through."""
    went = []
    while (task := engine.tasks.query().instance(instance_id).open().first()) is not None:
        went.append(task.element_id)
        engine.tasks.complete(task.id, actor="li")
    assert engine.runtime.get(instance_id).state == "completed"
    return went


class TestBatchMigration:
    def test_waiting_instances_continue_on_v2_and_one_at_a_removed_step_stays_on_v1(self, engine, db_url):
        engine.repository.deploy({"claim.bpmn": V1}, deployed_by="designer")
        at_submit = advance_to(engine, "submit", key="A")
        at_review = advance_to(engine, "review", key="B")
        at_approve = advance_to(engine, "approve", key="C")
        submit_task = engine.tasks.query().instance(at_submit.id).open().first()
        engine.tasks.claim(submit_task.id, user="zhang")
        engine.repository.deploy({"claim.bpmn": V2}, deployed_by="designer")
        ids = [at_submit.id, at_review.id, at_approve.id]

        checks = {c.instance_id: c for c in engine.runtime.check_migration(ids, to_version=2)}
        assert checks[at_submit.id].ok and checks[at_review.id].ok
        assert checks[at_approve.id].problems == ("it is at step 'approve', which version 2 no longer has",)
        assert checks[at_approve.id].from_version == 1 and checks[at_approve.id].business_key == "C"
        assert [e.action for e in engine.history.for_instance(at_submit.id)][
            -1
        ] == "task_claimed"  # no change

        outcomes = {o.instance_id: o for o in engine.runtime.migrate_all(ids, to_version=2, actor="boss")}
        assert outcomes[at_submit.id].migrated and outcomes[at_review.id].migrated
        assert not outcomes[at_approve.id].migrated
        assert outcomes[at_approve.id].problems == checks[at_approve.id].problems
        assert [engine.runtime.get(i).definition_version for i in ids] == [2, 2, 1]

        migrated = engine.history.query().instance(at_submit.id).action("instance_migrated").list()
        assert [(e.actor, e.details["before"], e.details["after"]) for e in migrated] == [
            ("boss", "claim:1", "claim:2")
        ]
        assert not engine.history.query().instance(at_approve.id).action("instance_migrated").list()
        # the open task kept its id and its holder
        assert (
            engine.tasks.get(submit_task.id).assignee == "zhang"
            and engine.tasks.get(submit_task.id).state == "ready"
        )

        # a second worker with cold caches reads the instances against their new definition
        other = Engine.from_url(db_url, EngineConfig(live_cache_size=0))
        try:
            assert finish(other, at_submit.id) == ["submit", "check", "review"]
        finally:
            other.close()
        assert finish(engine, at_review.id) == ["review"]
        assert finish(engine, at_approve.id) == ["approve"]  # still the old version's step

    def test_steps_it_went_through_that_v2_dropped_are_taken_out_of_its_path(self, engine, db_url):
        """v2 drops two steps in a row before the one the instance waits at: it moves, goes on on
        v2, and keeps the dropped steps' task rows and audit entries as history."""
        engine.repository.deploy(
            {"claim.bpmn": b.linear("claim", ["user:submit", "manual:check", "user:review", "user:approve"])},
            deployed_by="designer",
        )
        at_review = advance_to(engine, "review", key="D")
        engine.repository.deploy(
            {"claim.bpmn": b.linear("claim", ["user:review", "user:approve"])}, deployed_by="designer"
        )
        [check] = engine.runtime.check_migration([at_review.id], to_version=2)
        assert check.ok, check.problems
        [outcome] = engine.runtime.migrate_all([at_review.id], to_version=2, actor="boss")
        assert outcome.migrated and engine.runtime.get(at_review.id).definition_version == 2
        [entry] = engine.history.query().instance(at_review.id).action("instance_migrated").list()
        assert entry.details["steps_taken_out"] == ["submit", "check"]
        other = Engine.from_url(db_url, EngineConfig(live_cache_size=0))  # read back from the database
        try:
            assert finish(other, at_review.id) == ["review", "approve"]
        finally:
            other.close()
        done = engine.tasks.query().instance(at_review.id).list()
        assert [t.element_id for t in sorted(done, key=lambda t: t.created_at)][:1] == ["submit"]

    def test_a_dropped_branch_of_a_parallel_block_still_blocks(self, engine):
        """A step that went through a split is not in a straight line: a join counts its branches."""
        engine.repository.deploy({"parallel.bpmn": b.parallel_users()}, deployed_by="designer")
        instance = engine.runtime.start("parallel", started_by="li")
        left = next(
            t for t in engine.tasks.query().instance(instance.id).open().list() if t.element_id == "left"
        )
        engine.tasks.complete(left.id, actor="li")
        one_branch = (
            b.parallel_users()
            .decode()
            .replace('<bpmn:userTask id="left" name="left" camunda:candidateGroups="legal" />', "")
            .replace('<bpmn:sequenceFlow id="f2" sourceRef="split" targetRef="left" />', "")
            .replace('<bpmn:sequenceFlow id="f4" sourceRef="left" targetRef="join" />', "")
        )
        engine.repository.deploy({"parallel.bpmn": one_branch.encode()}, deployed_by="designer")
        [check] = engine.runtime.check_migration([instance.id], to_version=2)
        assert check.problems == ("it went through step 'left', which version 2 no longer has",)
        with pytest.raises(ConflictError):
            engine.runtime.migrate(instance.id, to_version=2, actor="boss")
        assert engine.runtime.get(instance.id).definition_version == 1

    def test_a_second_migration_is_refused_and_unknown_versions_say_so(self, engine):
        engine.repository.deploy({"claim.bpmn": V1}, deployed_by="designer")
        instance = advance_to(engine, "review", key="A")
        (check,) = engine.runtime.check_migration([instance.id], to_version=1)
        assert check.problems == ("it already runs on version 1",)
        (check,) = engine.runtime.check_migration([instance.id], to_version=7)
        assert check.problems == ("process 'claim' has no version 7",)
        with pytest.raises(ConflictError) as refused:
            engine.runtime.migrate(instance.id, to_version=1, actor="boss")
        assert refused.value.details == ["it already runs on version 1"]
        finish(engine, instance.id)
        (check,) = engine.runtime.check_migration([instance.id], to_version=1)
        assert check.problems == ("it is completed",)

    def test_a_failed_instance_moves_and_its_retry_runs_the_fixed_step(self, engine):
        broken = b.linear("calc", ["script:work:total = 10 / 0", "user:after"])
        fixed = b.linear("calc", ["script:work:total = 10 / 2", "user:after"])
        engine.repository.deploy({"calc.bpmn": broken}, deployed_by="designer")
        instance = engine.runtime.start("calc", started_by="li")
        assert engine.runtime.get(instance.id).state == "error"
        engine.repository.deploy({"calc.bpmn": fixed}, deployed_by="designer")
        moved = engine.runtime.migrate(instance.id, to_version=2, actor="boss")
        assert moved.state == "error" and moved.definition_version == 2  # still failed, on the new version
        retried = engine.runtime.retry(instance.id, actor="boss")
        assert retried.state == "running" and waiting_at(engine, instance.id) == ["after"]
        assert engine.runtime.variables(instance.id)["total"] == 5


class TestTimersAndTasks:
    def test_a_waiting_timer_keeps_its_due_time_and_fires_on_the_new_version(self, engine):
        v1 = b.boundary_timer("sla", '"PT2S"')
        v2 = v1.replace(b'name="work"', b'name="work (v2)"').replace(
            b'name="escalated"', b'name="escalated v2"'
        )
        engine.repository.deploy({"sla.bpmn": v1}, deployed_by="designer")
        instance = engine.runtime.start("sla", started_by="li")
        due = engine.runtime.get(instance.id).next_timer_due
        engine.repository.deploy({"sla.bpmn": v2}, deployed_by="designer")
        time.sleep(0.3)  # a timer re-armed by the migration would be due later
        engine.runtime.migrate(instance.id, to_version=2, actor="boss")
        assert engine.runtime.get(instance.id).next_timer_due == due
        assert engine.tasks.query().instance(instance.id).open().first().name == "work (v2)"

        runner = JobRunner(engine, owner="test")
        deadline = time.monotonic() + 10
        while waiting_at(engine, instance.id) != ["escalated"] and time.monotonic() < deadline:
            runner.run_once()
            time.sleep(0.1)
        assert engine.tasks.query().instance(instance.id).open().first().name == "escalated v2"


@pytest.fixture
def company(app):
    eng = app.extensions["baton.engine"]
    eng.identity.create_department("销售部")
    eng.identity.create_user("wang", PASSWORD, role="manager", department="销售部")
    eng.identity.create_user("li", PASSWORD, role="employee", department="销售部")
    eng.identity.set_department_manager("销售部", "wang")
    eng.repository.deploy({"claim.bpmn": V1}, deployed_by="designer")
    return eng


def test_the_migration_page_checks_then_moves_the_ticked_instances(app, company):
    eng = company
    movable, stuck = advance_to(eng, "review", key="OK-1"), advance_to(eng, "approve", key="STUCK-1")
    eng.repository.deploy({"claim.bpmn": V2}, deployed_by="designer")
    client = app.test_client()
    login = client.post(
        "/login", data={"username": "wang", "password": PASSWORD, "csrf_token": _token(client)}
    )
    assert login.status_code == 302

    page = client.get("/manage/migrations?process=claim&to_version=2").get_data(as_text=True)
    assert re.search(rf'value="{movable.id}"[^>]*checked', page)
    assert re.search(rf'value="{stuck.id}"[^>]*disabled', page)
    assert "it is at step &#39;approve&#39;, which version 2 no longer has" in page

    done = client.post(
        "/manage/migrations",
        data={
            "process": "claim",
            "to_version": "2",
            "instance": [movable.id, stuck.id],
            "csrf_token": _token(client),
        },
    )
    assert done.status_code == 200
    assert eng.runtime.get(movable.id).definition_version == 2
    assert eng.runtime.get(stuck.id).definition_version == 1

    instance_page = client.get(f"/manage/instances/{stuck.id}").get_data(as_text=True)
    assert 'id="migrate-form"' in instance_page and "no longer has" in instance_page
    refused = client.post(
        f"/manage/instances/{stuck.id}/migrate", data={"to_version": "2", "csrf_token": _token(client)}
    )
    assert refused.status_code == 302 and eng.runtime.get(stuck.id).definition_version == 1
    assert "no longer has" in client.get(refused.headers["Location"]).get_data(as_text=True)  # the flash


def _token(client) -> str:
    with client.session_transaction() as session:
        if "csrf_token" in session:
            return session["csrf_token"]
    page = client.get("/login").get_data(as_text=True)
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
