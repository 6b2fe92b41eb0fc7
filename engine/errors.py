"""One exception tree for everything the engine refuses; web/ maps it to HTTP codes in one place."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class BatonError(Exception):
    """Base of every error the engine raises on purpose."""

    code = "error"

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class NotFoundError(BatonError):
    """The thing does not exist, or the caller may not know it exists (HTTP 404)."""

    code = "not_found"


class ValidationError(BatonError):
    """Input is wrong: a BPMN bundle, form data, a variable (HTTP 422). ``details`` lists problems."""

    code = "invalid"

    def __init__(self, message: str, *, problems: Sequence[Any] = ()) -> None:
        super().__init__(message, details=list(problems))
        self.problems = list(problems)


class NotAllowedError(BatonError):
    """The caller is known but may not do this (HTTP 403)."""

    code = "forbidden"


class ConflictError(BatonError):
    """Somebody else changed the thing first: a completed task, a stale version (HTTP 409)."""

    code = "conflict"


class EngineError(BatonError):
    """The process itself failed (script error, missing variable); the instance is now in ``error``."""

    code = "engine_error"
