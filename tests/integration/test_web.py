"""The web app: pages answer over real HTTP, need a login, refuse forged forms; JSON errors for the API."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import process_bundle


def login(client, username: str, password: str):
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    return client.post("/login", data={"username": username, "password": password, "csrf_token": token})


def test_pages_need_a_login_and_the_overview_lists_instances(app, client):
    engine = app.extensions["baton.engine"]
    engine.identity.create_user("boss", "password-1", role="admin")
    engine.repository.deploy(process_bundle("expense_approval"), deployed_by="designer")
    engine.runtime.start(
        "expense_approval", business_key="EXP-77", started_by="li", variables={"initiator": "li"}
    )
    assert client.get("/").status_code == 302
    assert "/login" in client.get("/inbox").headers["Location"]
    assert login(client, "boss", "wrong-password").status_code == 401
    assert login(client, "boss", "password-1").status_code == 302
    html = client.get("/overview").get_data(as_text=True)
    assert "expense_approval" in html and "EXP-77" in html and 'name="viewport"' in html


def test_forms_without_the_csrf_token_are_refused(app, client):
    app.extensions["baton.engine"].identity.create_user("boss", "password-1", role="admin")
    login(client, "boss", "password-1")
    assert client.post("/logout").status_code == 400
    assert client.get("/inbox").status_code == 200  # still logged in


def test_health_and_json_errors(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    missing = client.get("/api/v1/no-such-thing")
    assert missing.status_code == 404 and missing.get_json()["error"]["code"] == "not_found"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_baton_demo_serves_on_a_real_port(tmp_path):
    """What `make run` does: init, deploy processes/, load samples/, serve — then real HTTP GETs."""
    port = _free_port()
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'demo.db'}", "SECRET_KEY": "demo"}
    baton = Path(sys.executable).with_name("baton")
    proc = subprocess.Popen(
        [str(baton), "demo", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/login", timeout=2) as response:
                    html = response.read().decode()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        proc.stdout.read() if proc.stdout else "demo did not start"
                    ) from None
                time.sleep(0.3)
        assert "Baton" in html and 'name="password"' in html
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            assert response.status == 200
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        proc.stdout.close()
