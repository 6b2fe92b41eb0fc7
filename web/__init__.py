"""Baton's web layer: Flask app factory (``web.app.create_app``), blueprints, CLI."""
