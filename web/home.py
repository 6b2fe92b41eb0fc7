"""Landing page and health check."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify, redirect, render_template, url_for
from sqlalchemy import text

from web.extensions import db
from web.security import login_required

bp = Blueprint("home", __name__)


@bp.get("/")
def root():
    return redirect(url_for("inbox.todo"))


@bp.get("/overview")
@login_required
def index():
    engine = current_app.extensions["baton.engine"]
    definitions = engine.repository.query().latest_only().order_by_key().list()
    instances = engine.runtime.query().order_by_started().page(0, 20)
    open_tasks = engine.tasks.query().open().count()
    return render_template("home.html", definitions=definitions, instances=instances, open_tasks=open_tasks)


@bp.get("/healthz")
def health():
    db.session.execute(text("SELECT 1"))
    return jsonify(status="ok")
