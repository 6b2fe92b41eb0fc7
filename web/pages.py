"""Small helpers the server-rendered list and detail pages share (inbox, manage, measures, designer,
records): the page number asked for, people's and processes' display names, list addresses, and
whether the vendored BPMN viewer is there to draw diagrams."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlencode

from flask import current_app, request, url_for

from web.security import engine

VIEWER_JS = "vendor/bpmn-navigated-viewer.production.min.js"


def page_index() -> int:
    """The 0-based page from ``?page=`` (1-based; nonsense reads as the first page)."""
    try:
        return min(max(int(request.args.get("page", "1")) - 1, 0), 100_000)
    except ValueError:
        return 0


def display_names(usernames: Iterable[str | None]) -> dict[str, str]:
    """username -> what to show (display name, or the username)."""
    names = sorted({u for u in usernames if u})
    if not names:
        return {}
    return {u.username: u.name for u in engine().identity.users().username(*names).list()}


def process_names() -> dict[str, str]:
    """key -> name of every deployed process (its latest version's name), by key."""
    return {d.key: d.name or d.key for d in engine().repository.query().latest_only().order_by_key().list()}


def list_url(endpoint: str, pairs: list[tuple[str, str]]) -> str:
    """The list page's address with the non-empty ``pairs`` as its query string."""
    query = urlencode([(k, v) for k, v in pairs if v])
    return url_for(endpoint) + (f"?{query}" if query else "")


def viewer_available() -> bool:
    """Whether bpmn-js is vendored (``make install`` with npm); without it pages show no diagram."""
    return Path(current_app.static_folder or "", VIEWER_JS).is_file()
