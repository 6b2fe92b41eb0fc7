"""Browser tests: real headless Chromium (Debian's, driven by Python Playwright) against a real server.

The server is the Flask app on a free loopback port (werkzeug, threaded) over a fresh SQLite file.
Without Playwright or Chromium the tests skip with the reason, unless ``BATON_REQUIRE_BROWSER=1``
(CI), where that fails them. ``scripts/ensure-chromium.sh`` installs Chromium and a CJK font;
``playwright install`` is never needed (nor used): the system Chromium is launched directly.
Screenshots go to test-artifacts/screenshots/ (or ``BATON_ARTIFACTS``/screenshots).
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT

REQUIRE_BROWSER = os.environ.get("BATON_REQUIRE_BROWSER") == "1"
CHROMIUM = os.environ.get("BATON_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(os.environ.get("BATON_ARTIFACTS") or ROOT / "test-artifacts") / "screenshots"


def _unavailable() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Python Playwright is not installed (pip install playwright; the system Chromium is used)"
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        return f"no Chromium at {CHROMIUM}: run scripts/ensure-chromium.sh (apt-get install chromium)"
    return None


@pytest.fixture(scope="session")
def browser() -> Iterator:
    reason = _unavailable()
    if reason:
        if REQUIRE_BROWSER:
            pytest.fail(f"BATON_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@dataclass
class LiveServer:
    url: str
    app: object

    @property
    def engine(self):
        return self.app.extensions["baton.engine"]


@pytest.fixture
def live_server(sqlite_template, tmp_path) -> Iterator[LiveServer]:
    """The web app serving real HTTP on 127.0.0.1:<free port> over a fresh SQLite database."""
    from werkzeug.serving import make_server

    from web.app import create_app

    path = tmp_path / "browser.db"
    shutil.copy(sqlite_template, path)
    app = create_app(
        {
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{path}",
            "SECRET_KEY": "browser-tests",
            "SCRIPT_TIMEOUT": 1.0,
            "SCHEDULER_ENABLED": False,
        }
    )
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="live-server", daemon=True)
    thread.start()
    try:
        yield LiveServer(f"http://127.0.0.1:{server.server_port}", app)
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()
        app.extensions["baton.engine"].close()


@pytest.fixture
def screenshots() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


PASSWORD = "s3cret-pass"
PHONE = {"width": 375, "height": 812}
DESKTOP = {"width": 1280, "height": 900}


class Tab:
    """One person's browser tab, with the JavaScript errors it met (``close`` fails on any).

    ``prefix`` starts the screenshots' file names; with ``console_errors`` errors written to the
    console count too (but for resources that failed to load)."""

    prefix = ""
    console_errors = False

    def __init__(self, browser, base: str, shots: Path, viewport: dict = DESKTOP) -> None:
        self.base, self.shots, self.viewport = base, shots, viewport
        self.context = browser.new_context(viewport=viewport, locale="zh-CN")
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(f"{self.page.url}: {exc}"))
        if self.console_errors:
            self.page.on(
                "console",
                lambda msg: (
                    self.errors.append(msg.text)
                    if msg.type == "error" and "Failed to load resource" not in msg.text
                    else None
                ),
            )

    def goto(self, path: str) -> None:
        self.page.goto(self.base + path)

    def log_in(self, username: str, password: str = PASSWORD) -> None:
        """Through the login page, as a person would; it leads to the inbox."""
        self.goto("/login")
        self.page.fill("#username", username)
        self.page.fill("#password", password)
        self.page.click("form.stack button[type=submit]")
        self.page.wait_for_url(self.base + "/inbox")

    def check(self, name: str, *, fits: bool = True) -> None:
        """Screenshot the whole page; unless told otherwise make sure nothing is wider than the screen."""
        self.page.screenshot(path=str(self.shots / f"{self.prefix}{name}.png"), full_page=True)
        if fits:
            width = self.page.evaluate("document.documentElement.scrollWidth")
            screen = self.viewport["width"]
            assert width <= screen, f"{name}: {width}px wide on a {screen}px screen"

    def close(self) -> None:
        self.context.close()
        assert not self.errors, self.errors
