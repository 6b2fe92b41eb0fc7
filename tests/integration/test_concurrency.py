"""Two people completing the same task: exactly one wins, the rest get a conflict, nothing breaks."""

from __future__ import annotations

import threading

from engine.errors import ConflictError
from tests import bpmn_builders as b

THREADS = 20


def _race(fn, count: int) -> tuple[list[object], list[BaseException]]:
    barrier = threading.Barrier(count)
    results: list[object] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker(index: int) -> None:
        barrier.wait()
        try:
            value = fn(index)
        except BaseException as exc:  # noqa: BLE001 - collected and asserted on below
            with lock:
                errors.append(exc)
        else:
            with lock:
                results.append(value)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return results, errors


class TestConcurrentCompletion:
    def test_twenty_threads_one_success(self, engine):
        engine.repository.deploy({"a.bpmn": b.approval()}, deployed_by="d")
        instance = engine.runtime.start("approval3")
        task = engine.tasks.query().instance(instance.id).open().first()

        results, errors = _race(
            lambda i: engine.tasks.complete(task.id, actor=f"user{i}", data={"n": i}), THREADS
        )

        assert len(results) == 1, errors
        assert len(errors) == THREADS - 1
        assert all(isinstance(e, ConflictError) for e in errors), [repr(e) for e in errors]
        # The instance is consistent: the winner's data, exactly one next task, and it still runs on.
        winner = engine.history.query().instance(instance.id).action("task_completed").list()
        assert len(winner) == 1
        assert engine.runtime.variables(instance.id)["n"] == winner[0].details["data"]["n"]
        open_tasks = engine.tasks.query().instance(instance.id).open().list()
        assert [t.element_id for t in open_tasks] == ["manager"]
        engine.tasks.complete(open_tasks[0].id, actor="m")
        finance = engine.tasks.query().instance(instance.id).open().first()
        engine.tasks.complete(finance.id, actor="f")
        assert engine.runtime.get(instance.id).state == "completed"

    def test_concurrent_claims_one_winner(self, engine):
        engine.repository.deploy({"a.bpmn": b.approval()}, deployed_by="d")
        instance = engine.runtime.start("approval3")
        task = engine.tasks.query().instance(instance.id).open().first()

        results, errors = _race(lambda i: engine.tasks.claim(task.id, user=f"user{i}"), 10)

        assert len(results) == 1 and all(isinstance(e, ConflictError) for e in errors), errors
        assert engine.tasks.get(task.id).assignee == results[0].assignee
