"""The one error hierarchy of crmhooks.

::

    CrmHooksError                    anything this package raises on purpose
    ├── ConfigError                  bad settings or command-line input
    └── ApiError                     carries an HTTP status, an error name and code
        ├── ParameterInvalid         400 ERROR_PARAMETER_INVALID (query params, malformed JSON)
        ├── Unauthorized             401 ERROR_UNAUTHORIZED
        ├── Forbidden                403 ERROR_FORBIDDEN (a dashboard form without its CSRF token)
        ├── NotFound                 404 ERROR_ENTITY_NOT_FOUND
        │   └── UnknownType          404 ERROR_UNKNOWN_TYPE (no collection of that name)
        ├── MethodNotAllowed         405 ERROR_METHOD_NOT_ALLOWED
        ├── CursorExpired            410 ERROR_CURSOR_EXPIRED, with ``oldest_cursor`` (ours)
        ├── PayloadTooLarge          413 ERROR_PAYLOAD_TOO_LARGE
        ├── ValidationFailed         422 ERROR_ENTITY_VALIDATION, with field errors
        ├── BatchFailed              422 ERROR_ENTITY_VALIDATION, each failed item at its index
        ├── TooManyRequests          429 ERROR_TOO_MANY_REQUESTS, with Retry-After
        └── InternalError            500 ERROR_INTERNAL

Each error builds its own body here (``ApiError.body``) and ``crmhooks.api.envelopes`` sends it;
nothing else builds error bodies. The 422 body is Pipeliner's, key for key, as the real service
sends it (``entity_id``, ``entity_name``, ``entity_errors``, ``field_errors`` with ``field_id``,
``step_checklist_errors``, ``entity_index``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, ClassVar


class CrmHooksError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(CrmHooksError):
    """Settings or command-line input that cannot be used."""


@dataclass(frozen=True)
class FieldError:
    """One problem with one field of a write: ``field_errors[].errors[]`` in the envelope."""

    field_name: str
    name: str
    code: int
    message: str


# Inner error names and codes (ours where Pipeliner has none; the table is in docs/api.md).
# A missing required field is Pipeliner's own inner error: code 119 inside the field's entry of
# a 422 ERROR_ENTITY_VALIDATION, as its recorded answers show (not a top-level error).
RELATIONS_DOESNT_EXIST = ("ERROR_RELATIONS_DOESNT_EXIST", 120)
FIELD_REQUIRED = ("ERROR_PARAMETER_MISSING", 119)
FIELD_TYPE = ("ERROR_FIELD_TYPE", 40011)
FIELD_UNKNOWN = ("ERROR_FIELD_UNKNOWN", 40012)
FIELD_READ_ONLY = ("ERROR_FIELD_READ_ONLY", 40013)
FIELD_VALUE = ("ERROR_FIELD_VALUE", 40014)


def field_error(field_name: str, kind: tuple[str, int], message: str) -> FieldError:
    """Build a :class:`FieldError` from one of the inner (name, code) pairs above."""
    return FieldError(field_name=field_name, name=kind[0], code=kind[1], message=message)


# Pipeliner names each field by the id of its definition; ours is derived from the entity and
# field names, so it is the same for a field in every space and every release.
_FIELD_IDS = uuid.UUID("7d0f7c3e-5b8a-4f0e-9a57-2c1e6b1f4d20")


def field_id(entity_name: str | None, field_name: str) -> str | None:
    """The stable id of a field (null when the entity is not known)."""
    if entity_name is None:
        return None
    return str(uuid.uuid5(_FIELD_IDS, f"{entity_name}.{field_name}"))


class ApiError(CrmHooksError):
    """An error with a place in the error envelope (docs/api.md#errors)."""

    http_status: ClassVar[int] = 500
    name: ClassVar[str] = "ERROR_INTERNAL"
    code: ClassVar[int] = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def body(self) -> dict[str, Any]:
        return {
            "success": False,
            "http_status": self.http_status,
            "code": self.code,
            "name": self.name,
            "message": self.message,
        }

    def headers(self) -> dict[str, str] | None:
        """HTTP headers the answer carries besides the envelope."""
        return None


class ParameterInvalid(ApiError):
    http_status = 400
    name = "ERROR_PARAMETER_INVALID"
    code = 117


class Unauthorized(ApiError):
    http_status = 401
    name = "ERROR_UNAUTHORIZED"
    code = 401

    def headers(self) -> dict[str, str] | None:
        return {"WWW-Authenticate": 'Basic realm="restapi"'}


class Forbidden(ApiError):
    http_status = 403
    name = "ERROR_FORBIDDEN"
    code = 403


class NotFound(ApiError):
    http_status = 404
    name = "ERROR_ENTITY_NOT_FOUND"
    code = 404


class UnknownType(NotFound):
    """``/entities/{name}`` where no collection has that name: Pipeliner's code and message."""

    name = "ERROR_UNKNOWN_TYPE"
    code = 2006

    def __init__(self, entity: str) -> None:
        super().__init__(f"cannot determine entity type from {entity}")


class MethodNotAllowed(ApiError):
    http_status = 405
    name = "ERROR_METHOD_NOT_ALLOWED"
    code = 405


class CursorExpired(ApiError):
    """410: a change feed cursor older than what retention keeps (docs/webhooks.md, Change
    feed); ``oldest_cursor`` is where reading can start again."""

    http_status = 410
    name = "ERROR_CURSOR_EXPIRED"
    code = 410

    def __init__(self, message: str, oldest_cursor: str) -> None:
        super().__init__(message)
        self.oldest_cursor = oldest_cursor

    def body(self) -> dict[str, Any]:
        return {**super().body(), "oldest_cursor": self.oldest_cursor}


class PayloadTooLarge(ApiError):
    http_status = 413
    name = "ERROR_PAYLOAD_TOO_LARGE"
    code = 413


class TooManyRequests(ApiError):
    """429: too many failed authentications from this address or against this key lately."""

    http_status = 429
    name = "ERROR_TOO_MANY_REQUESTS"
    code = 429

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = max(1, retry_after)

    def headers(self) -> dict[str, str] | None:
        return {"Retry-After": str(self.retry_after)}


class InternalError(ApiError):
    http_status = 500
    name = "ERROR_INTERNAL"
    code = 500


class ValidationFailed(ApiError):
    """422: one or more fields of a write are wrong; nothing was changed.

    ``about`` places it: the entity (singular name, as Pipeliner writes it), the record's id (null
    on a create) and, for an item of a batch, its index.
    """

    http_status = 422
    name = "ERROR_ENTITY_VALIDATION"
    code = 40000

    def __init__(self, errors: list[FieldError], message: str | None = None) -> None:
        names = ", ".join(dict.fromkeys(e.field_name for e in errors))
        super().__init__(message or f"invalid value of field(s): {names}")
        self.errors = errors
        self.entity_name: str | None = None
        self.entity_id: str | None = None
        self.entity_index: int | None = None

    def about(
        self, entity_name: str, entity_id: str | None = None, index: int | None = None
    ) -> ValidationFailed:
        """Name the record it is about (the first placing wins: it is the most precise)."""
        if self.entity_name is None:
            self.entity_name, self.entity_id = entity_name, entity_id
        if index is not None:
            self.entity_index = index
        return self

    def body(self) -> dict[str, Any]:
        grouped: dict[str, list[FieldError]] = {}
        for e in self.errors:
            grouped.setdefault(e.field_name, []).append(e)
        out = super().body()
        out.update(
            entity_id=self.entity_id,
            entity_name=self.entity_name,
            entity_errors=[],
            field_errors=[
                _field_entry(self.entity_name, name, errors) for name, errors in grouped.items()
            ],
            step_checklist_errors=[],
            entity_index=self.entity_index,
        )
        return out


def _field_entry(entity: str | None, name: str, errors: list[FieldError]) -> dict[str, Any]:
    fid = field_id(entity, name)
    return {
        "field_id": fid,
        "field_name": name,
        "name": "ERROR_FIELD_VALIDATION",
        "code": 40002,
        "errors": [
            {
                "code": e.code,
                "name": e.name,
                "message": e.message,
                "field_id": fid,
                "field_name": name,
            }
            for e in errors
        ],
    }


class BatchFailed(ApiError):
    """422: items of an all-or-nothing batch failed, so nothing of the batch was stored.

    ``data`` has the error object of each failed item at its index and null elsewhere.
    """

    http_status = 422
    name = "ERROR_ENTITY_VALIDATION"
    code = 40000

    def __init__(self, failed: list[int], data: list[Any]) -> None:
        listed = ", ".join(str(i) for i in failed[:20]) + (" ..." if len(failed) > 20 else "")
        super().__init__(f"batch item(s) {listed} failed; nothing was saved")
        self.data = data

    def body(self) -> dict[str, Any]:
        # The keys of a 422 ERROR_ENTITY_VALIDATION, as clients of Pipeliner decode them; the
        # failed items themselves are in ``data``.
        return {
            **super().body(),
            "entity_id": None,
            "entity_name": None,
            "entity_errors": [],
            "field_errors": [],
            "step_checklist_errors": [],
            "entity_index": None,
            "data": self.data,
        }


def batch_item_error(index: int, exc: ApiError, entity_name: str, entity_id: str | None) -> Any:
    """One failed item of a batch, at its place in ``data``: the error's body with the item's
    index as Pipeliner names it (``entity_index``) and as we always did (``index``, ours)."""
    if isinstance(exc, ValidationFailed):
        exc.about(entity_name, entity_id, index)
    return {"index": index, **exc.body(), "entity_index": index}
