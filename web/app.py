"""The Flask application factory."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from engine.context import EngineConfig
from engine.db import Database, configure_engine, engine_options, normalize_url
from engine.facade import Engine
from integrations.catalog import default_connectors
from web import errors, i18n
from web.config import load_config
from web.extensions import db
from web.security import check_csrf, csrf_token, current_principal


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__, instance_relative_config=True)
    app.config.from_mapping(load_config(app.instance_path))
    app.config.setdefault("PERMANENT_SESSION_LIFETIME", timedelta(hours=12))
    if test_config:
        app.config.from_mapping(test_config)
    app.config["SQLALCHEMY_DATABASE_URI"] = normalize_url(app.config["SQLALCHEMY_DATABASE_URI"])
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = engine_options(
        app.config["SQLALCHEMY_DATABASE_URI"], app.config.get("SQLALCHEMY_ENGINE_OPTIONS")
    )
    db.init_app(app)
    with app.app_context():
        database = Database(configure_engine(db.engine))
    app.extensions["baton.engine"] = Engine(
        database,
        EngineConfig(
            script_timeout=app.config["SCRIPT_TIMEOUT"],
            max_file_bytes=app.config["MAX_FILE_BYTES"],
            connectors=default_connectors(),
        ),
    )
    if app.config.get("PROXY_HOPS"):  # behind a reverse proxy: the client's address (rate limits)
        hops = app.config["PROXY_HOPS"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)
    errors.register(app)
    i18n.init_app(app)
    from web import support

    support.init_app(app)  # before the CSRF check: its request size limit applies before a form is read
    app.before_request(check_csrf)
    app.jinja_env.globals.update(csrf_token=csrf_token, current_principal=current_principal)

    from web import admin, auth, designer, home, inbox, manage, openapi, vendor
    from web import measures as measures_pages
    from web import records as record_pages
    from web.api import auth as api_auth
    from web.api import definitions, instances, messages, tasks
    from web.api import measures as api_measures
    from web.api import records as record_api

    for blueprint in (
        home.bp,
        auth.bp,
        inbox.bp,
        admin.bp,
        designer.bp,
        openapi.bp,
        api_auth.bp,
        definitions.bp,
        instances.bp,
        tasks.bp,
        messages.bp,
        measures_pages.bp,
        api_measures.bp,
        manage.bp,
        record_pages.bp,
        record_api.bp,
        vendor.bp,
    ):
        app.register_blueprint(blueprint)
    return app


def engine_of(app: Flask) -> Engine:
    return app.extensions["baton.engine"]
