"""What the flagship-process tests (test_process_approval.py, test_process_ticket.py) share.

* The demo company (samples/company.py) and the shipped processes (processes/) in a template database,
  built once per run: its fifteen password hashes take seconds. Each test gets a copy, on SQLite (a
  file copy) and on PostgreSQL (``CREATE DATABASE ... TEMPLATE``), and bearer tokens of every demo user.
* The web app on that copy, its e-mail going to a real SMTP server on loopback (aiosmtpd).
* A frozen wall clock (freezegun, as ENGINE-NOTES advises for timers): SpiffWorkflow decides whether a
  timer is due by the wall clock and the engine by its own clock, which is the wall clock in the app.
  Tests move it forward and run the scheduler once (``Callers.fire_timers``).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from freezegun import freeze_time
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from engine.context import EngineConfig
from engine.db import create_db_engine
from engine.facade import Engine
from engine.migrate import upgrade
from engine.scheduler import JobRunner
from samples.company import DEMO_PASSWORD, PEOPLE, load_company
from tests.conftest import PG_ADMIN_URL, PG_TEST_DB, ROOT
from tests.integration.test_connectors import SmtpServer, free_port

BUNDLES = ("approval", "ticket")
COMPANY_DB = f"{PG_TEST_DB}_company"
COPY_DB = f"{PG_TEST_DB}_process"
# Monday 23 Nov 2026, 10:00 in Beijing: inside working hours (09-12, 13-18), a plain working week
MONDAY_10AM = "2026-11-23T02:00:00+00:00"


def bundle(name: str) -> dict[str, bytes]:
    folder = ROOT / "processes" / name
    return {f.name: f.read_bytes() for f in sorted(folder.iterdir()) if f.is_file()}


def _fill(url: str) -> dict[str, str]:
    """Migrate, load the company, deploy the processes; the demo users' bearer tokens."""
    migrated = create_db_engine(url)
    upgrade(migrated)
    migrated.dispose()
    engine = Engine.from_url(url, EngineConfig())
    try:
        list(load_company(engine))
        for name in BUNDLES:
            engine.repository.deploy(bundle(name), deployed_by="designer", name=name)
        return {p.username: engine.identity.create_token(p.username, "tests")[0] for p in PEOPLE}
    finally:
        engine.close()


@pytest.fixture(scope="session")
def sqlite_company(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    path = tmp_path_factory.mktemp("company") / "company.db"
    tokens = _fill(f"sqlite:///{path}")
    engine = create_db_engine(f"sqlite:///{path}")
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()
    return path, tokens


def _admin(statements: list[str]) -> None:
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for statement in statements:
            conn.execute(text(statement))
    admin.dispose()


def _pg_url(database: str) -> str:
    return make_url(PG_ADMIN_URL).set(database=database).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def postgres_company(postgres_url) -> Iterator[dict[str, str]]:
    """A template database with the company (``postgres_url`` skips or fails when there is no server)."""
    _admin([f"DROP DATABASE IF EXISTS {COMPANY_DB} WITH (FORCE)", f"CREATE DATABASE {COMPANY_DB}"])
    tokens = _fill(_pg_url(COMPANY_DB))
    yield tokens
    _admin(
        [
            f"DROP DATABASE IF EXISTS {COPY_DB} WITH (FORCE)",
            f"DROP DATABASE IF EXISTS {COMPANY_DB} WITH (FORCE)",
        ]
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def company_db(request, tmp_path) -> tuple[str, dict[str, str]]:
    """A fresh copy of the company database: (url, username -> bearer token)."""
    if request.param == "sqlite":
        template, tokens = request.getfixturevalue("sqlite_company")
        path = tmp_path / "baton.db"
        shutil.copy(template, path)
        return f"sqlite:///{path}", tokens
    tokens = request.getfixturevalue("postgres_company")
    _admin(
        [
            f"DROP DATABASE IF EXISTS {COPY_DB} WITH (FORCE)",
            f"CREATE DATABASE {COPY_DB} TEMPLATE {COMPANY_DB}",
        ]
    )
    return _pg_url(COPY_DB), tokens


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer(free_port())
    server.start()
    yield server
    server.stop()


class Caller:
    """One demo user calling the REST API with their bearer token."""

    def __init__(self, client: Any, username: str, token: str) -> None:
        self.client = client
        self.username = username
        self.headers = {"Authorization": f"Bearer {token}"}

    def get(self, path: str, **kw: Any) -> Any:
        return self.client.get(f"/api/v1{path}", headers=self.headers, **kw)

    def post(self, path: str, **kw: Any) -> Any:
        return self.client.post(f"/api/v1{path}", headers=self.headers, **kw)

    def ok(self, method: str, path: str, status: int = 200, **kw: Any) -> Any:
        answer = getattr(self, method)(path, **kw)
        assert answer.status_code == status, (self.username, path, answer.status_code, answer.get_json())
        return answer.get_json()

    def start(self, key: str, business_key: str | None = None, **variables: Any) -> dict:
        body = {"definition_key": key, "business_key": business_key, "variables": variables}
        return self.ok("post", "/process-instances", 201, json=body)

    def tasks(self, instance_id: str, scope: str = "mine") -> list[dict]:
        return self.ok("get", f"/tasks?scope={scope}&instance_id={instance_id}")["items"]

    def task(self, instance_id: str, element_id: str | None = None) -> dict:
        """This caller's one open task of the instance (at ``element_id``), claiming a pooled one."""
        found = [
            t for t in self.tasks(instance_id, "all") if element_id is None or t["element_id"] == element_id
        ]
        mine = [t for t in found if t["assignee"] == self.username]
        if not mine:
            pooled = [t for t in found if t["assignee"] is None]
            assert pooled, (self.username, element_id, found)
            mine = [self.ok("post", f"/tasks/{pooled[0]['id']}/claim")]
        assert len(mine) == 1, mine
        return mine[0]

    def complete(self, instance_id: str, element_id: str | None = None, **data: Any) -> dict:
        task = self.task(instance_id, element_id)
        return self.ok("post", f"/tasks/{task['id']}/complete", json={"data": data})


class Callers:
    """The app, its demo users (``callers['wangqiang']``), the frozen clock and the scheduler."""

    def __init__(self, app: Any, tokens: dict[str, str], clock: Any) -> None:
        self.app = app
        self.client = app.test_client()
        self.engine: Engine = app.extensions["baton.engine"]
        self.clock = clock
        self._tokens = tokens
        self._runner = JobRunner(self.engine, owner="tests", workers=1)

    def __getitem__(self, username: str) -> Caller:
        return Caller(self.client, username, self._tokens[username])

    def now(self) -> datetime:
        return self.engine.context.now()

    def fire_timers(self, *, after: timedelta | None = None, until: datetime | None = None) -> None:
        """Move the clock (by ``after`` or to ``until``) and let the scheduler fire what is due."""
        if after is not None:
            self.clock.tick(after)
        if until is not None:
            self.clock.move_to(until)
        self._runner.run_once()

    def open_tasks(self, instance_id: str) -> list[tuple[str, str | None]]:
        """(element, assignee) of the instance's open tasks, in order, as an administrator sees them."""
        tasks = self["admin"].ok("get", f"/tasks?scope=all&instance_id={instance_id}&sort=created")["items"]
        return [(t["element_id"], t["assignee"]) for t in tasks]

    def instance(self, instance_id: str) -> dict:
        return self["admin"].ok("get", f"/process-instances/{instance_id}")

    def actions(self, instance_id: str) -> list[tuple[str, str | None, str | None]]:
        """(action, actor, element) of the instance's audit trail."""
        return [(e["action"], e["actor"], e["element_id"]) for e in self.instance(instance_id)["history"]]

    def deploy(self, name: str) -> None:
        """Deploy processes/<name> as the designer (for processes the template database does not hold)."""
        self.engine.repository.deploy(bundle(name), deployed_by="designer", name=name)

    def browser(self, username: str) -> Any:
        """A test client signed in as ``username`` through the login page: the web pages, not the API."""
        client = self.app.test_client()
        token = self.csrf(client.get("/login"))
        login = {"username": username, "password": DEMO_PASSWORD, "csrf_token": token}
        assert client.post("/login", data=login).status_code == 302
        return client

    @staticmethod
    def csrf(page: Any) -> str:
        """The CSRF token of a page (a response, or its HTML)."""
        html = page if isinstance(page, str) else page.get_data(as_text=True)
        return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)

    def close(self) -> None:
        self._runner.close()


@pytest.fixture
def callers(company_db, smtp, monkeypatch) -> Iterator[Callers]:
    """The app on a copy of the company database, on a clock frozen at Monday 10:00 (Beijing)."""
    from web.app import create_app

    url, tokens = company_db
    monkeypatch.setenv("BATON_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("BATON_SMTP_PORT", str(smtp.port))
    with freeze_time(MONDAY_10AM, real_asyncio=True) as clock:
        app = create_app(
            {
                "TESTING": True,
                "SQLALCHEMY_DATABASE_URI": url,
                "SECRET_KEY": "test",
                "SCRIPT_TIMEOUT": 2.0,
                "SCHEDULER_ENABLED": False,
            }
        )
        found = Callers(app, tokens, clock)
        try:
            yield found
        finally:
            found.close()
            found.engine.close()
