"""The web app: pages answer over real HTTP, errors come back in one JSON envelope."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import process_bundle

ROOT = Path(__file__).resolve().parents[2]


def test_home_lists_definitions_and_instances(app, client):
    engine = app.extensions["baton.engine"]
    engine.repository.deploy(process_bundle("expense_approval"), deployed_by="designer")
    engine.runtime.start(
        "expense_approval", business_key="EXP-77", started_by="li", variables={"initiator": "li"}
    )
    page = client.get("/")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "expense_approval" in html and "EXP-77" in html and 'name="viewport"' in html


def test_health_and_json_errors(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    missing = client.get("/no-such-page")
    assert missing.status_code == 404 and missing.get_json()["error"]["code"] == "not_found"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_baton_demo_serves_on_a_real_port(tmp_path):
    """What `make run` does: init, deploy processes/, load samples/, serve — then a real HTTP GET."""
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
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                    html = response.read().decode()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        proc.stdout.read() if proc.stdout else "demo did not start"
                    ) from None
                time.sleep(0.3)
        assert "expense_approval" in html and "EXP-2026-0003" in html
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        proc.stdout.close()
