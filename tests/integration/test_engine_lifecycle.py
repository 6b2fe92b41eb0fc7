"""Deploy, start, complete, cancel, suspend: the engine facade against a real database."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from engine.errors import ConflictError, NotFoundError, ValidationError
from tests import bpmn_builders as b
from tests.conftest import process_bundle


class TestDeployingVersions:
    def test_identical_content_does_not_create_a_version(self, engine):
        first = engine.repository.deploy({"a.bpmn": b.approval()}, deployed_by="designer")
        again = engine.repository.deploy({"a.bpmn": b.approval()}, deployed_by="designer")
        assert first.new_versions == ("approval3",)
        assert again.new_versions == () and again.unchanged == ("approval3",)
        assert [d.version for d in engine.repository.query().key("approval3").list()] == [1]

    def test_redeploy_keeps_running_instances_on_their_version(self, engine):
        engine.repository.deploy({"a.bpmn": b.linear("p", ["user:one", "user:two"])}, deployed_by="d")
        old = engine.runtime.start("p", started_by="u")
        result = engine.repository.deploy(
            {"a.bpmn": b.linear("p", ["user:one", "user:three"])}, deployed_by="d"
        )
        assert result.definitions[0].version == 2
        new = engine.runtime.start("p", started_by="u")
        assert (old.definition_version, new.definition_version) == (1, 2)
        assert engine.repository.instance_counts("p") == {1: 1, 2: 1}

        def walk(instance_id: str) -> list[str]:
            seen = []
            while (task := engine.tasks.query().instance(instance_id).open().first()) is not None:
                seen.append(task.element_id)
                engine.tasks.complete(task.id, actor="u")
            return seen

        assert walk(old.id) == ["one", "two"]
        assert walk(new.id) == ["one", "three"]
        assert engine.runtime.get(old.id).state == "completed"

    def test_invalid_bundle_is_refused_with_problems_and_nothing_deployed(self, engine):
        with pytest.raises(ValidationError) as caught:
            engine.repository.deploy({"bad.bpmn": b"<bpmn:definitions"}, deployed_by="d")
        assert caught.value.problems and caught.value.problems[0].file == "bad.bpmn"
        assert engine.repository.query().count() == 0

    @pytest.mark.parametrize(
        "doctype",
        [
            '<!DOCTYPE d [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>',
            '<!DOCTYPE d [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
            '<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]>',
        ],
        ids=["xxe", "billion-laughs"],
    )
    def test_entity_attacks_are_refused(self, engine, doctype):
        xml = b.approval().decode().replace("<bpmn:definitions", doctype + "\n<bpmn:definitions", 1)
        xml = xml.replace('name="submit"', 'name="&xxe;"' if "xxe" in doctype else 'name="&c;"')
        with pytest.raises(ValidationError) as caught:
            engine.repository.deploy({"evil.bpmn": xml.encode()}, deployed_by="d")
        assert "root:" not in str(caught.value.problems)
        assert any("DOCTYPE" in p.message or "DTD" in p.message for p in caught.value.problems)
        assert engine.repository.query().count() == 0

    def test_unknown_key_is_not_found(self, engine):
        with pytest.raises(NotFoundError):
            engine.runtime.start("nope")


class TestExpenseApproval:
    """The shipped demo process, driven through the facade."""

    @pytest.fixture
    def deployed(self, engine):
        engine.repository.deploy(process_bundle("expense_approval"), deployed_by="designer")
        return engine

    def test_approved_claim_passes_manager_and_finance(self, deployed):
        engine = deployed
        instance = engine.runtime.start(
            "expense_approval", business_key="EXP-1", started_by="zhang", variables={"initiator": "zhang"}
        )
        submit = engine.tasks.query().instance(instance.id).open().first()
        assert (submit.element_id, submit.assignee, submit.form_key) == (
            "submit",
            "zhang",
            "expense_claim.json",
        )
        engine.tasks.complete(submit.id, actor="zhang", data={"amount": 120, "reason": "taxi"})

        manager = engine.tasks.query().instance(instance.id).open().first()
        assert manager.element_id == "manager_approval"
        assert manager.candidate_groups == ("managers",) and manager.due_at is not None
        assert engine.tasks.query().open().candidate_groups("managers").count() == 1
        assert engine.tasks.query().open().candidate_groups("finance").count() == 0
        engine.tasks.claim(manager.id, user="boss")
        with pytest.raises(ConflictError):
            engine.tasks.claim(manager.id, user="other")
        engine.tasks.complete(manager.id, actor="boss", data={"decision": "approve"})

        finance = engine.tasks.query().instance(instance.id).open().first()
        assert finance.element_id == "finance_review"
        engine.tasks.complete(finance.id, actor="cfo", data={"decision": "approve"})

        done = engine.runtime.get(instance.id, with_variables=True)
        assert done.state == "completed" and done.ended_at is not None
        assert done.variables["amount"] == 120 and done.variables["decision"] == "approve"
        assert engine.tasks.query().instance(instance.id).open().count() == 0
        assert engine.tasks.query().instance(instance.id).state("completed").count() == 3
        actions = [e.action for e in engine.history.for_instance(instance.id)]
        assert actions[0] == "instance_started" and actions[-1] == "instance_completed"
        assert actions.count("task_completed") == 3 and actions.count("task_created") == 3
        assert ("boss", "task_claimed") in {
            (e.actor, e.action) for e in engine.history.for_instance(instance.id)
        }

    def test_rejected_claim_ends_after_manager(self, deployed):
        engine = deployed
        instance = engine.runtime.start("expense_approval", started_by="li", variables={"initiator": "li"})
        for data in ({"amount": 99999, "reason": "party"}, {"decision": "reject"}):
            task = engine.tasks.query().instance(instance.id).open().first()
            engine.tasks.complete(task.id, actor="x", data=data)
        assert engine.runtime.get(instance.id).state == "completed"
        assert [
            t.element_id for t in engine.tasks.query().instance(instance.id).order_by_created().list()
        ] == [
            "submit",
            "manager_approval",
        ]

    def test_completed_task_cannot_be_completed_again(self, deployed):
        engine = deployed
        instance = engine.runtime.start("expense_approval", started_by="li", variables={"initiator": "li"})
        task = engine.tasks.query().instance(instance.id).open().first()
        engine.tasks.complete(task.id, actor="li", data={"amount": 1, "reason": "pen"})
        with pytest.raises(ConflictError):
            engine.tasks.complete(task.id, actor="li", data={"amount": 2, "reason": "pen"})
        assert engine.runtime.variables(instance.id)["amount"] == 1


class TestInstanceControl:
    def test_parallel_tasks_get_candidates_and_priority(self, engine):
        engine.repository.deploy({"p.bpmn": b.parallel_users()}, deployed_by="d")
        instance = engine.runtime.start("parallel")
        tasks = {t.element_id: t for t in engine.tasks.query().instance(instance.id).open().list()}
        assert tasks["left"].candidate_groups == ("legal",)
        assert tasks["right"].candidate_users == ("alice", "bob") and tasks["right"].priority == 80
        assert [t.element_id for t in engine.tasks.query().open().candidate_user("bob").list()] == ["right"]

    def test_cancel_closes_open_tasks(self, engine):
        engine.repository.deploy({"p.bpmn": b.parallel_users()}, deployed_by="d")
        instance = engine.runtime.start("parallel")
        cancelled = engine.runtime.cancel(instance.id, actor="admin", reason="duplicate")
        assert cancelled.state == "cancelled"
        assert engine.tasks.query().instance(instance.id).open().count() == 0
        assert engine.tasks.query().instance(instance.id).state("cancelled").count() == 2
        with pytest.raises(ConflictError):
            engine.runtime.cancel(instance.id, actor="admin")

    def test_suspended_instance_refuses_completion_until_resumed(self, engine):
        engine.repository.deploy({"a.bpmn": b.approval()}, deployed_by="d")
        instance = engine.runtime.start("approval3")
        task = engine.tasks.query().instance(instance.id).open().first()
        engine.runtime.suspend(instance.id, actor="admin")
        with pytest.raises(ConflictError):
            engine.tasks.complete(task.id, actor="u")
        engine.runtime.resume(instance.id, actor="admin")
        engine.tasks.complete(task.id, actor="u")
        assert engine.tasks.query().instance(instance.id).open().first().element_id == "manager"
        actions = [e.action for e in engine.history.for_instance(instance.id)]
        assert "instance_suspended" in actions and "instance_resumed" in actions

    def test_transfer_and_unclaim(self, engine):
        engine.repository.deploy({"a.bpmn": b.approval()}, deployed_by="d")
        instance = engine.runtime.start("approval3")
        task = engine.tasks.query().instance(instance.id).open().first()
        moved = engine.tasks.transfer(task.id, to_user="wang", actor="li", comment="请代办")
        assert moved.assignee == "wang"
        assert engine.tasks.query().open().assignee("wang").count() == 1
        assert engine.tasks.unclaim(task.id, actor="wang").assignee is None

    def test_audit_log_is_append_only(self, engine):
        engine.repository.deploy({"a.bpmn": b.approval()}, deployed_by="d")
        with engine.db.engine.connect() as conn:
            with pytest.raises(Exception, match="append-only"):
                conn.execute(text("UPDATE audit_log SET actor = 'forger'"))
            conn.rollback()
            with pytest.raises(Exception, match="append-only"):
                conn.execute(text("DELETE FROM audit_log"))


class TestFormValidation:
    def test_invalid_form_data_is_refused_and_changes_nothing(self, engine):
        engine.repository.deploy(process_bundle("expense_approval"), deployed_by="designer")
        instance = engine.runtime.start("expense_approval", started_by="li", variables={"initiator": "li"})
        task = engine.tasks.query().instance(instance.id).open().first()
        with pytest.raises(ValidationError) as caught:
            engine.tasks.complete(task.id, actor="li", data={"amount": -5, "reason": "x", "os": "rm"})
        fields = {p["field"] for p in caught.value.problems}
        assert {"amount", "reason"} <= fields
        assert engine.tasks.get(task.id).state == "ready"
        assert "amount" not in engine.runtime.variables(instance.id)
        assert engine.tasks.form(task.id).field("amount") is not None

    def test_html_form_strings_are_coerced(self, engine):
        engine.repository.deploy(process_bundle("expense_approval"), deployed_by="designer")
        instance = engine.runtime.start("expense_approval", started_by="li", variables={"initiator": "li"})
        task = engine.tasks.query().instance(instance.id).open().first()
        engine.tasks.complete(
            task.id,
            actor="li",
            data={"amount": "1,234.5", "reason": "出差", "category": "travel"},
            from_json=False,
        )
        assert engine.runtime.variables(instance.id)["amount"] == 1234.5

    def test_money_stays_an_exact_decimal_through_later_steps(self, engine):
        """A money field is a Decimal in task data: it must survive being saved under a child task
        (SpiffWorkflow 3.2.0 stores a task's data as an unconverted delta: engine/serialization.py)."""
        money = b'{"type": "object", "properties": {"amount": {"type": "number", "x-widget": "money"}}}'
        bpmn = b.linear("money", ["user:pay", "user:check", "user:archive"]).replace(
            b'id="pay" name="pay"', b'id="pay" name="pay" camunda:formKey="money.json"'
        )
        engine.repository.deploy({"money.bpmn": bpmn, "money.json": money}, deployed_by="designer")
        instance = engine.runtime.start("money", started_by="li")
        for data in ({"amount": "0.10"}, {}, {}):
            task = engine.tasks.query().instance(instance.id).open().first()
            engine.tasks.complete(task.id, actor="li", data=data)
        assert engine.runtime.get(instance.id).state == "completed"
        history = [e for e in engine.history.for_instance(instance.id) if e.action == "task_completed"]
        assert history[0].details["data"] == {"amount": "0.10"}
