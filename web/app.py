"""The Flask application factory."""

from __future__ import annotations

from typing import Any

from flask import Flask

from engine.context import EngineConfig
from engine.db import Database, configure_engine, normalize_url
from engine.facade import Engine
from web import errors
from web.config import load_config
from web.extensions import db


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__, instance_relative_config=True)
    app.config.from_mapping(load_config(app.instance_path))
    if test_config:
        app.config.from_mapping(test_config)
    app.config["SQLALCHEMY_DATABASE_URI"] = normalize_url(app.config["SQLALCHEMY_DATABASE_URI"])
    db.init_app(app)
    with app.app_context():
        database = Database(configure_engine(db.engine))
    app.extensions["baton.engine"] = Engine(
        database,
        EngineConfig(
            script_timeout=app.config["SCRIPT_TIMEOUT"], max_file_bytes=app.config["MAX_FILE_BYTES"]
        ),
    )
    errors.register(app)

    from web import home

    app.register_blueprint(home.bp)
    return app


def engine_of(app: Flask) -> Engine:
    return app.extensions["baton.engine"]
