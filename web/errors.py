"""The one place engine errors become HTTP answers: a JSON envelope for the API, a page for people."""

from __future__ import annotations

from dataclasses import asdict, is_dataclass

from flask import Flask, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

from engine.errors import (
    BatonError,
    ConflictError,
    EngineError,
    NotAllowedError,
    NotFoundError,
    ValidationError,
)

STATUS = {
    NotFoundError: 404,
    ValidationError: 422,
    NotAllowedError: 403,
    ConflictError: 409,
    EngineError: 422,
}


def status_of(error: BatonError) -> int:
    return next((code for cls, code in STATUS.items() if isinstance(error, cls)), 400)


def _details(details):
    if isinstance(details, list):
        return [asdict(d) if is_dataclass(d) else d for d in details]
    return details


def _wants_json() -> bool:
    return (
        request.path.startswith("/api/")
        or request.path == "/healthz"
        or request.accept_mimetypes.best == ("application/json")
    )


def _answer(code: str, message: str, status: int, details=None):
    if _wants_json():
        return jsonify({"error": {"code": code, "message": message, "details": details}}), status
    return render_template("error.html", status=status, message=message, details=details), status


def register(app: Flask) -> None:
    @app.errorhandler(BatonError)
    def _baton(error: BatonError):
        return _answer(error.code, error.message, status_of(error), _details(error.details))

    @app.errorhandler(HTTPException)
    def _http(error: HTTPException):
        return _answer(
            error.name.lower().replace(" ", "_"), error.description or error.name, error.code or 500
        )
