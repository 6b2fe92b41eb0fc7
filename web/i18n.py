"""Simplified Chinese and English: the user's own choice, else the browser's, else Chinese."""

from __future__ import annotations

from flask import Flask, request, session
from flask_babel import Babel, get_locale

from web.security import current_principal

LOCALES = ("zh_CN", "en")
babel = Babel()


def select_locale() -> str:
    principal = current_principal()
    if principal is not None and principal.user.locale in LOCALES:
        return principal.user.locale
    if session.get("locale") in LOCALES:
        return session["locale"]
    best = request.accept_languages.best_match(["zh-CN", "zh", "en"], default="zh-CN")
    return "en" if best == "en" else "zh_CN"


def init_app(app: Flask) -> None:
    app.config.setdefault("BABEL_DEFAULT_LOCALE", "zh_CN")
    app.config.setdefault("BABEL_TRANSLATION_DIRECTORIES", "translations")
    babel.init_app(app, locale_selector=select_locale)
    app.jinja_env.globals["get_locale"] = get_locale
