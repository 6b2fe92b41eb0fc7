"""Engine errors and hostile scripts end as an instance error: nothing half-written, nothing executed."""

from __future__ import annotations

import hashlib
import time

import pytest

from engine.errors import ValidationError
from engine.models import Deployment, DeploymentFile, ProcessDefinition
from tests import bpmn_builders as b


def _start_script(engine, source: str, pid: str = "scripted"):
    engine.repository.deploy(
        {f"{pid}.bpmn": b.linear(pid, [f"script:s:{source}", "user:after"])}, deployed_by="d"
    )
    return engine.runtime.start(pid, started_by="u")


def _smuggle(engine, pid: str, bpmn: bytes) -> None:
    """Store a definition without the upload checks (as if deployed by an older, laxer Baton), to
    prove the run-time sandbox holds on its own."""
    with engine.db.unit_of_work() as uow:
        now = engine.context.now()
        deployment = Deployment(
            name=pid,
            content_hash=hashlib.sha256(bpmn).hexdigest(),
            deployed_by="old",
            deployed_at=now,
            files=[DeploymentFile(filename=f"{pid}.bpmn", kind="bpmn", content=bpmn)],
        )
        uow.session.add(deployment)
        uow.session.flush()
        uow.session.add(
            ProcessDefinition(
                key=pid,
                version=1,
                name=pid,
                content_hash="x" * 64,
                deployment_id=deployment.id,
                deployed_by="old",
                deployed_at=now,
            )
        )
        uow.commit()


class TestScriptFailures:
    def test_missing_variable_errors_then_retry_with_fix_continues(self, engine):
        instance = _start_script(engine, "doubled = amount * 2")
        assert instance.state == "error"
        assert instance.error_element == "s" and "amount" in instance.error_message
        assert engine.tasks.query().instance(instance.id).open().count() == 0
        errors = engine.history.query().instance(instance.id).action("instance_error").list()
        assert errors[0].element_id == "s"

        fixed = engine.runtime.retry(instance.id, actor="admin", variables={"amount": 21})
        assert fixed.state == "running" and fixed.error_message is None
        assert engine.runtime.variables(instance.id)["doubled"] == 42
        assert engine.tasks.query().instance(instance.id).open().first().element_id == "after"

    def test_failure_after_a_completion_keeps_the_completion(self, engine):
        engine.repository.deploy(
            {"p.bpmn": b.linear("p", ["user:first", "script:s:total = price * 2", "user:last"])},
            deployed_by="d",
        )
        instance = engine.runtime.start("p")
        first = engine.tasks.query().instance(instance.id).open().first()
        engine.tasks.complete(first.id, actor="u", data={"prise": 3})  # typo: the script will fail
        failed = engine.runtime.get(instance.id)
        assert failed.state == "error" and failed.error_element == "s"
        assert engine.tasks.get(first.id).state == "completed"
        engine.runtime.retry(instance.id, actor="admin", variables={"price": 3})
        assert engine.runtime.variables(instance.id)["total"] == 6


HOSTILE = {
    "import": "import os\nos.system('touch {marker}')",
    "dunder_import": "__import__('os').system('touch {marker}')",
    "open": "open('{marker}', 'w').write('x')",
    "subclasses": "x = ().__class__.__base__.__subclasses__()",
    "getattr": "x = getattr((), '__class__')",
    "format": "x = '{{0.__class__}}'.format(1)",
}


class TestHostileScripts:
    @pytest.mark.parametrize("name", sorted(HOSTILE))
    def test_refused_as_instance_error_and_nothing_written(self, engine, tmp_path, name):
        marker = tmp_path / "pwned"
        pid = f"hostile_{name}"
        _smuggle(
            engine, pid, b.linear(pid, [f"script:s:{HOSTILE[name].format(marker=marker)}", "user:after"])
        )
        instance = engine.runtime.start(pid, started_by="u")
        assert instance.state == "error", instance
        assert instance.error_element == "s"
        assert not marker.exists()
        assert engine.tasks.query().instance(instance.id).open().count() == 0

    @pytest.mark.parametrize("name", ["import", "dunder_import", "subclasses", "getattr"])
    def test_refused_at_upload_with_the_element_named(self, engine, tmp_path, name):
        pid = f"upload_{name}"
        with pytest.raises(ValidationError) as caught:
            engine.repository.deploy(
                {f"{pid}.bpmn": b.linear(pid, [f"script:s:{HOSTILE[name].format(marker=tmp_path / 'x')}"])},
                deployed_by="d",
            )
        assert any(p.element_id == "s" for p in caught.value.problems), caught.value.problems

    def test_endless_loop_is_stopped_by_the_time_limit(self, engine):
        began = time.monotonic()
        instance = _start_script(engine, "while True:\n    pass", pid="loop")
        elapsed = time.monotonic() - began
        assert instance.state == "error" and "time" in instance.error_message.lower()
        assert elapsed < 10
        # The engine still serves other work afterwards.
        engine.repository.deploy({"a.bpmn": b.approval()}, deployed_by="d")
        assert engine.runtime.start("approval3").state == "running"

    def test_gateway_condition_runs_sandboxed(self, engine):
        _smuggle(engine, "g", b.gateway_on("g", "__import__('os') is None"))
        instance = engine.runtime.start("g")
        task = engine.tasks.query().instance(instance.id).open().first()
        engine.tasks.complete(task.id, actor="u")
        assert engine.runtime.get(instance.id).state == "error"

    def test_gateway_condition_routes(self, engine):
        engine.repository.deploy({"g.bpmn": b.gateway_on("g2", "amount > 100")}, deployed_by="d")
        big, small = engine.runtime.start("g2"), engine.runtime.start("g2")
        for instance, amount in ((big, 500), (small, 5)):
            task = engine.tasks.query().instance(instance.id).open().first()
            engine.tasks.complete(task.id, actor="u", data={"amount": amount})
        assert engine.tasks.query().instance(big.id).open().first().element_id == "yes"
        assert engine.tasks.query().instance(small.id).open().first().element_id == "no"
