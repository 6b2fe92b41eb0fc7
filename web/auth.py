"""Log in and out of the pages (session cookie); the API uses bearer tokens instead."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Blueprint, redirect, render_template, request, url_for
from flask_babel import gettext as _

from web.security import engine, log_in, log_out

bp = Blueprint("auth", __name__)


def _safe_next(target: str | None) -> str:
    """Only same-site paths: never redirect a logged-in user to another host."""
    if not target or urlsplit(target).netloc or not target.startswith("/") or target.startswith("//"):
        return url_for("inbox.todo")
    return target


@bp.route("/login", methods=["GET", "POST"])
def login():
    error = None
    username = ""
    if request.method == "POST":
        username = request.form.get("username", "").strip()
        user = engine().identity.authenticate(username, request.form.get("password", ""))
        if user is not None:
            log_in(user)
            return redirect(_safe_next(request.args.get("next")))
        error = _("Wrong username or password, or the account is frozen or locked for a while.")
    return render_template("auth/login.html", error=error, username=username), 401 if error else 200


@bp.post("/logout")
def logout():
    log_out()
    return redirect(url_for("auth.login"))
