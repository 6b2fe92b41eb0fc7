"""Configuration from environment variables, with defaults that need no set-up at all."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any


def _secret_key(instance: Path) -> str:
    """SECRET_KEY from the environment, else one generated on first run and kept in instance/."""
    if os.environ.get("SECRET_KEY"):
        return os.environ["SECRET_KEY"]
    path = instance / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()


def load_config(instance_path: str) -> dict[str, Any]:
    instance = Path(instance_path)
    instance.mkdir(parents=True, exist_ok=True)
    return {
        "SECRET_KEY": _secret_key(instance),
        "SQLALCHEMY_DATABASE_URI": os.environ.get("DATABASE_URL") or f"sqlite:///{instance / 'baton.db'}",
        "SCRIPT_TIMEOUT": float(os.environ.get("BATON_SCRIPT_TIMEOUT", "2.0")),
        "MAX_CONTENT_LENGTH": int(os.environ.get("BATON_MAX_UPLOAD_BYTES", str(20 * 1024 * 1024))),
        "MAX_FILE_BYTES": int(os.environ.get("BATON_MAX_FILE_BYTES", str(5 * 1024 * 1024))),
        "SCHEDULER_ENABLED": os.environ.get("BATON_SCHEDULER", "on") != "off",
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "SESSION_COOKIE_SECURE": os.environ.get("BATON_SECURE_COOKIES", "off") == "on",
        # the customers' request form /support/new (web/support.py): on unless "off"; requests an
        # address may send per hour; proxies in front of the app whose X-Forwarded-For is trusted
        "SUPPORT_FORM": os.environ.get("BATON_SUPPORT_FORM", "on") != "off",
        "SUPPORT_RATE_LIMIT": int(os.environ.get("BATON_SUPPORT_RATE_LIMIT", "10")),
        # the department customers' tickets count under (managers' lists and figures); unset: none
        "SUPPORT_DEPARTMENT": os.environ.get("BATON_SUPPORT_DEPARTMENT", ""),
        "PROXY_HOPS": int(os.environ.get("BATON_PROXY_HOPS", "0")),
    }
