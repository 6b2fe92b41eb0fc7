"""Flask extensions, created unbound and bound to an app in ``create_app``."""

from __future__ import annotations

from flask_sqlalchemy import SQLAlchemy

from engine.models import Base

db = SQLAlchemy(model_class=Base)
