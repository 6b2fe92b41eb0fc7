"""History retention on SQLite and PostgreSQL: finished instances lose their engine state (archived
to a gzip JSON file, or purged) while every figure of the measures and every audit entry stay the
same; running and recently finished instances are untouched; a dry run changes nothing; the
scheduler runs it daily through the job table; ``baton retention`` on the command line."""

from __future__ import annotations

import gzip
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import text

from engine.context import EngineConfig
from engine.errors import ConflictError, ValidationError
from engine.facade import Engine
from engine.scheduler import JobRunner
from engine.tasks import Upload
from tests.conftest import Clock, process_bundle
from tests.integration.test_measures import PASSWORD, DataSet, build, build_on

LATER = datetime(2027, 6, 1, tzinfo=UTC)  # 188 days after the last ticket ended


@pytest.fixture
def data(clocked) -> DataSet:
    found = build(*clocked)
    found.clock.now = LATER
    return found


def snapshot(engine: Engine) -> dict:
    """Everything retention must not change, read through the engine and the database."""
    with engine.db.engine.connect() as conn:
        states = dict(conn.execute(text("SELECT id, engine_state IS NOT NULL FROM process_instance")).all())
        candidates = conn.scalar(text("SELECT count(*) FROM task_candidate"))
        tasks = conn.execute(text("SELECT * FROM human_task ORDER BY id")).all()
    return {
        "figures": figures_of(engine),
        "audit": engine.history.query().chronological().list(),
        "instances": engine.runtime.query().order_by_started().list(),
        "tasks": tasks,
        "has_state": states,
        "candidates": candidates,
    }


def figures_of(engine: Engine):
    start, end = datetime(2026, 11, 20, tzinfo=UTC), datetime(2026, 11, 27, tzinfo=UTC)
    return [
        engine.measures.figures("ticket", start=start, end=end, departments=departments)
        for departments in (None, *([d.id] for d in engine.identity.departments().list()))
    ]


class TestArchive:
    def test_figures_and_history_stay_the_state_goes_to_a_file(self, data, tmp_path):
        engine = data.engine
        i1, i2, i3, i4 = data.ids
        before = snapshot(engine)
        states = _engine_states(engine)
        report = engine.retention.run(days=180, archive_dir=tmp_path, actor="ops")
        assert report.instance_ids == (i1, i2, i3)  # oldest end first; i4 still runs
        assert (report.mode, report.dry_run, report.remaining, report.days) == ("archive", False, 0, 180)
        assert report.cutoff == LATER - timedelta(days=180)

        after = snapshot(engine)
        assert after["figures"] == before["figures"]
        # the same instances, listed alike (only their row version counts the change)
        assert [replace(i, version=0) for i in after["instances"]] == [
            replace(i, version=0) for i in before["instances"]
        ]
        assert after["tasks"] == before["tasks"]
        assert after["audit"][: len(before["audit"])] == before["audit"]  # nothing rewritten
        added = after["audit"][len(before["audit"]) :]
        assert [(e.action, e.instance_id, e.actor) for e in added] == [
            ("instance_archived", i1, "ops"),
            ("instance_archived", i2, "ops"),
            ("instance_archived", i3, "ops"),
            ("retention_run", None, "ops"),
        ]
        assert added[-1].details["instances"] == 3 and added[-1].details["days"] == 180
        assert after["has_state"] == {i1: False, i2: False, i3: False, i4: True}
        assert after["candidates"] == before["candidates"]  # closed tasks offer nothing any more

        archived = engine.retention.archived(i1)
        assert archived is not None and archived.mode == "archive"
        path = tmp_path / "2026" / "11" / f"{i1}.json.gz"
        assert archived.file == str(path)
        document = json.loads(gzip.decompress(path.read_bytes()))
        assert document["format"] == "baton.instance-archive/1"
        assert document["engine_state"] == states[i1]
        assert document["instance"]["id"] == i1 and document["instance"]["state"] == "completed"
        assert document["instance"]["definition_version"] == 1
        assert {"task_candidates", "message_subscriptions", "jobs"} <= set(document)
        assert engine.retention.archived(i4) is None

    def test_an_archived_instance_still_reads_but_cannot_change(self, data, tmp_path):
        engine = data.engine
        i1 = data.ids[0]
        engine.retention.run(days=180, archive_dir=tmp_path)
        found = engine.runtime.get(i1)
        assert (found.state, found.started_by) == ("completed", "ann")
        assert engine.runtime.variables(i1) == {}
        assert [t.element_id for t in engine.tasks.query().instance(i1).order_by_created().list()] == [
            "triage",
            "resolve",
        ]
        assert i1 in [i.id for i in engine.runtime.query().involving("ann").list()]
        with pytest.raises(ConflictError):
            engine.runtime.cancel(i1, actor="ops")

    def test_running_and_recent_instances_are_untouched_and_a_second_run_finds_nothing(self, data):
        engine = data.engine
        assert engine.retention.run(days=400).instance_ids == ()  # everything ended less than 400 days ago
        first = engine.retention.run(days=180)
        assert first.mode == "purge" and first.archive_dir is None and len(first.instance_ids) == 3
        again = engine.retention.run(days=180)
        assert again.instance_ids == () and again.remaining == 0
        runs = engine.history.query().action("retention_run").chronological().list()
        assert [r.details["instances"] for r in runs] == [0, 3, 0]
        assert _engine_states(engine)[data.ids[3]] is not None

    def test_a_limit_leaves_the_rest_for_the_next_run(self, data):
        report = data.engine.retention.run(days=180, limit=2)
        assert report.instance_ids == tuple(data.ids[:2]) and report.remaining == 1

    def test_dry_run_changes_nothing(self, data, tmp_path):
        engine = data.engine
        before = snapshot(engine)
        report = engine.retention.run(days=180, archive_dir=tmp_path / "archive", dry_run=True)
        assert report.dry_run and report.instance_ids == tuple(data.ids[:3]) and report.remaining == 0
        assert snapshot(engine) == before
        assert not (tmp_path / "archive").exists()

    def test_without_a_policy_or_days_it_refuses(self, data):
        with pytest.raises(ValidationError):
            data.engine.retention.run()
        with pytest.raises(ValidationError):
            data.engine.retention.run(days=0)


def _engine_states(engine: Engine) -> dict[str, str | None]:
    with engine.db.engine.connect() as conn:
        return dict(conn.execute(text("SELECT id, engine_state FROM process_instance")).all())


class TestAttachmentsAndSchedule:
    @pytest.fixture
    def configured(self, db_url, tmp_path):
        clock = Clock()
        config = EngineConfig(
            clock=clock, retention_days=30, retention_archive_dir=tmp_path, retention_attachments="remove"
        )
        engine = Engine.from_url(db_url, config)
        yield engine, clock
        engine.close()

    def test_attachments_go_into_the_archive_when_the_policy_removes_them(self, configured, tmp_path):
        engine, clock = configured
        engine.repository.deploy(process_bundle("expense_approval"), deployed_by="designer")
        instance = engine.runtime.start("expense_approval", started_by="li", variables={"initiator": "li"})
        task = engine.tasks.query().instance(instance.id).open().first()
        receipt = Upload("发票.pdf", "application/pdf", b"%PDF-1.4 receipt")
        engine.tasks.complete(
            task.id,
            actor="li",
            data={"amount": "5", "reason": "taxi"},
            from_json=False,
            uploads={"receipt": receipt},
        )
        attachment_id = engine.runtime.variables(instance.id)["receipt"]["attachment_id"]
        engine.runtime.cancel(instance.id, actor="li", reason="wrong month")
        clock.now += timedelta(days=31)
        assert engine.retention.run(dry_run=True).attachments_removed == 1
        report = engine.retention.run()
        assert report.instance_ids == (instance.id,) and report.attachments_removed == 1
        assert engine.retention.archived(instance.id).attachments_removed == 1
        with pytest.raises(Exception, match="not found"):
            engine.tasks.attachment(attachment_id)
        document = json.loads(gzip.decompress(next(tmp_path.rglob("*.json.gz")).read_bytes()))
        (saved,) = document["attachments"]
        assert saved["filename"] == "发票.pdf" and saved["content"]["base64"] == "JVBERi0xLjQgcmVjZWlwdA=="

    def test_the_scheduler_runs_it_daily(self, configured):
        engine, clock = configured
        build(engine, clock)
        clock.now = LATER
        runner = JobRunner(engine, owner="test")
        assert engine.retention.schedule() is True
        assert engine.retention.schedule() is True  # still one job row
        runner.run_once()
        assert engine.retention.archived(build_ids(engine)[0]) is not None
        with engine.db.engine.connect() as conn:
            jobs = conn.execute(text("SELECT kind, due_at, attempts FROM job WHERE kind = 'retention'")).all()
        assert len(jobs) == 1 and jobs[0].attempts == 0
        assert runner.run_once() == []  # not due again before tomorrow
        (run,) = engine.history.query().action("retention_run").list()
        assert (run.actor, run.details["instances"], run.details["days"]) == ("scheduler", 3, 30)
        actions = [e.action for e in engine.history.query().action("retention_scheduled").list()]
        assert actions == ["retention_scheduled"]
        clock.now += timedelta(days=1, minutes=1)
        outcomes = runner.run_once()
        assert len(outcomes) == 1 and outcomes[0].ok
        assert len(engine.history.query().action("retention_run").list()) == 2
        engine.context.config.retention_days = None  # the policy switched off: the job row goes
        assert engine.retention.schedule() is False
        with engine.db.engine.connect() as conn:
            assert conn.scalar(text("SELECT count(*) FROM job WHERE kind = 'retention'")) == 0


def build_ids(engine: Engine) -> list[str]:
    return [i.id for i in engine.runtime.query().order_by_started(descending=False).list()]


def test_command_line(db_url, monkeypatch, tmp_path):
    from web.cli import main

    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("SECRET_KEY", "cli-test")
    monkeypatch.setenv("BATON_SCHEDULER", "off")
    monkeypatch.delenv("BATON_RETENTION_DAYS", raising=False)
    clock = Clock()
    engine = Engine.from_url(db_url, EngineConfig(clock=clock))
    ids = build(engine, clock).ids
    engine.close()  # the command's own engine runs on the real clock: 2026-11-30 or later
    runner = CliRunner()
    off = runner.invoke(main, ["retention"])
    assert off.exit_code == 1 and "retention is off" in off.output
    dry = runner.invoke(main, ["retention", "--days", "1", "--dry-run"], catch_exceptions=False)
    assert dry.exit_code == 0 and "would purge the engine state of 3 instance(s)" in dry.output
    assert all(i in dry.output for i in ids[:3])
    done = runner.invoke(
        main, ["retention", "--days", "1", "--archive-dir", str(tmp_path)], catch_exceptions=False
    )
    assert done.exit_code == 0 and "archived the engine state of 3 instance(s)" in done.output
    assert len(list(tmp_path.rglob("*.json.gz"))) == 3
    monkeypatch.setenv("BATON_RETENTION_DAYS", "1")
    again = runner.invoke(main, ["retention"], catch_exceptions=False)
    assert "of 0 instance(s)" in again.output


class TestPagesOfArchivedInstances:
    def test_still_listed_and_readable(self, app):
        site = build_on(app)
        site.clock.now = LATER
        engine = app.extensions["baton.engine"]
        i1 = site.ids[0]
        engine.retention.run(days=180)
        client = app.test_client()
        token = client.post("/api/v1/auth/token", json={"username": "boss", "password": PASSWORD}).get_json()
        headers = {"Authorization": f"Bearer {token['token']}"}
        listed = client.get("/api/v1/process-instances?state=completed", headers=headers).get_json()
        assert i1 in [i["id"] for i in listed["items"]]
        detail = client.get(f"/api/v1/process-instances/{i1}", headers=headers)
        assert detail.status_code == 200 and detail.get_json()["state"] == "completed"
        assert [e["action"] for e in detail.get_json()["history"]][-1] == "instance_archived"
        pages = app.test_client()
        assert pages.post("/login", data={"username": "boss", "password": PASSWORD}).status_code == 302
        page = pages.get(f"/manage/instances/{i1}")
        assert page.status_code == 200 and "History retention removed" in page.get_data(as_text=True)
