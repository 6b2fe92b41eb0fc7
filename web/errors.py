"""The one place engine errors become HTTP answers: one JSON envelope for every API error."""

from __future__ import annotations

from dataclasses import asdict, is_dataclass

from flask import Flask, jsonify
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


def register(app: Flask) -> None:
    @app.errorhandler(BatonError)
    def _baton(error: BatonError):
        body = {"error": {"code": error.code, "message": error.message, "details": _details(error.details)}}
        return jsonify(body), status_of(error)

    @app.errorhandler(HTTPException)
    def _http(error: HTTPException):
        body = {"error": {"code": error.name.lower().replace(" ", "_"), "message": error.description}}
        return jsonify(body), error.code
