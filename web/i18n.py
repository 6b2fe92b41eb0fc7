"""Simplified Chinese and English: the user's own choice, else the browser's, else Chinese.

Source strings are English, in ``_()``; the Chinese catalog is web/translations/zh_Hans_CN/LC_MESSAGES/
messages.po (Babel reads the locale ``zh_CN`` that users choose as ``zh_Hans_CN``), compiled to .mo by
``make install`` (and, as a fallback, when the app starts and finds the .mo missing or older than the
.po). Dates are shown in BABEL_DEFAULT_TIMEZONE (Asia/Shanghai).

The language switch in the page header posts to ``/locale``: it keeps the choice in the session and,
for a logged-in user, in their profile (``User.locale``), so the choice follows them to other devices.
"""

from __future__ import annotations

import logging
import os
import tempfile
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

from flask import Blueprint, Flask, abort, current_app, g, redirect, request, session, url_for
from flask_babel import Babel, format_datetime, get_locale

from web.security import current_principal, engine

LOCALES = ("zh_CN", "en")
LANGUAGES = (("zh_CN", "中文"), ("en", "English"))  # each in its own language, never translated
babel = Babel()
bp = Blueprint("i18n", __name__)
log = logging.getLogger(__name__)


def select_locale() -> str:
    principal = current_principal()
    if principal is not None and principal.user.locale in LOCALES:
        return principal.user.locale
    if session.get("locale") in LOCALES:
        return session["locale"]
    best = request.accept_languages.best_match(["zh-CN", "zh", "en"], default="zh-CN")
    return "en" if best == "en" else "zh_CN"


def safe_path(target: str | None) -> str | None:
    """A same-site path (never another host), or None."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return None
    return target


def here() -> str:
    """Where the language switch comes back to: this page if it is a GET, else the page before it."""
    if request.method == "GET":
        return request.full_path.rstrip("?")
    referrer = urlsplit(request.referrer or "")
    if referrer.netloc == request.host and referrer.path.startswith("/"):
        return referrer.path + (f"?{referrer.query}" if referrer.query else "")
    return url_for("inbox.todo")


@bp.post("/locale")
def set_locale():
    locale = request.form.get("locale", "")
    if locale not in LOCALES:
        abort(400, description="unknown language")
    session["locale"] = locale
    principal = current_principal()
    if principal is not None and principal.user.locale != locale:
        engine().identity.update_user(principal.username, locale=locale, actor=principal.username)
        g.pop("principal", None)
    return redirect(safe_path(request.form.get("next")) or url_for("inbox.todo"))


def when(value: datetime | None, pattern: str = "yyyy-MM-dd HH:mm") -> str:
    """A date-time in the company's time zone (the engine keeps UTC)."""
    return format_datetime(value, pattern) if value is not None else ""


def compile_catalogs(root: Path) -> None:
    """Compile each messages.po whose .mo is missing or older (a checkout that skipped ``make install``)."""
    try:
        from babel.messages.mofile import write_mo
        from babel.messages.pofile import read_po
    except ImportError:  # pragma: no cover - Babel comes with Flask-Babel
        return
    for po in root.glob("*/LC_MESSAGES/*.po"):
        mo = po.with_suffix(".mo")
        try:
            if mo.exists() and mo.stat().st_mtime >= po.stat().st_mtime:
                continue
            with po.open("rb") as source:
                catalog = read_po(source, locale=po.parent.parent.name)
            fd, tmp = tempfile.mkstemp(dir=po.parent, suffix=".mo.tmp")
            with os.fdopen(fd, "wb") as target:
                write_mo(target, catalog)
            os.chmod(tmp, 0o644)
            os.replace(tmp, mo)
        except OSError as exc:  # a read-only install: run `pybabel compile -d web/translations`
            log.warning("could not compile %s: %s", po, exc)


def company_zone() -> str:
    """The company's time zone (IANA name): local days of date filters and measures."""
    return current_app.config.get("BABEL_DEFAULT_TIMEZONE") or "UTC"


def init_app(app: Flask) -> None:
    app.config.setdefault("BABEL_DEFAULT_LOCALE", "zh_CN")
    app.config.setdefault("BABEL_DEFAULT_TIMEZONE", "Asia/Shanghai")
    app.config.setdefault("BABEL_TRANSLATION_DIRECTORIES", "translations")
    compile_catalogs(Path(app.root_path) / "translations")
    babel.init_app(app, locale_selector=select_locale)
    app.jinja_env.globals.update(get_locale=get_locale, languages=LANGUAGES, here=here)
    app.jinja_env.filters["when"] = when
    app.register_blueprint(bp)
