"""The one error hierarchy of crmhooks.

::

    CrmHooksError                    anything this package raises on purpose
    ├── ConfigError                  bad settings or command-line input
    └── ApiError                     carries an HTTP status and the contract's error name/code
        ├── ParameterInvalid         400 ERROR_PARAMETER_INVALID (query params, malformed JSON)
        ├── Unauthorized             401 ERROR_UNAUTHORIZED
        ├── Forbidden                403 ERROR_FORBIDDEN (a dashboard form without its CSRF token)
        ├── NotFound                 404 ERROR_ENTITY_NOT_FOUND
        ├── MethodNotAllowed         405 ERROR_METHOD_NOT_ALLOWED
        ├── PayloadTooLarge          413 ERROR_PAYLOAD_TOO_LARGE
        ├── ValidationFailed         422 ERROR_ENTITY_VALIDATION, with field errors
        ├── BatchFailed              422 ERROR_ENTITY_VALIDATION, each failed item at its index
        ├── TooManyRequests          429 ERROR_TOO_MANY_REQUESTS, with Retry-After
        └── InternalError            500 ERROR_INTERNAL

The API layer turns an ``ApiError`` into the contract's envelope in exactly one place
(``crmhooks.api.errors``); nothing else builds error bodies.
"""

from __future__ import annotations

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


# Inner error names and codes (ours where Pipeliner documents none; see docs/errors.md).
RELATIONS_DOESNT_EXIST = ("ERROR_RELATIONS_DOESNT_EXIST", 120)
FIELD_REQUIRED = ("ERROR_FIELD_REQUIRED", 40010)
FIELD_TYPE = ("ERROR_FIELD_TYPE", 40011)
FIELD_UNKNOWN = ("ERROR_FIELD_UNKNOWN", 40012)
FIELD_READ_ONLY = ("ERROR_FIELD_READ_ONLY", 40013)
FIELD_VALUE = ("ERROR_FIELD_VALUE", 40014)


def field_error(field_name: str, kind: tuple[str, int], message: str) -> FieldError:
    """Build a :class:`FieldError` from one of the inner (name, code) pairs above."""
    return FieldError(field_name=field_name, name=kind[0], code=kind[1], message=message)


class ApiError(CrmHooksError):
    """An error with a place in the contract's envelope."""

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


class MethodNotAllowed(ApiError):
    http_status = 405
    name = "ERROR_METHOD_NOT_ALLOWED"
    code = 405


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
    """422: one or more fields of a write are wrong; nothing was changed."""

    http_status = 422
    name = "ERROR_ENTITY_VALIDATION"
    code = 40000

    def __init__(self, errors: list[FieldError], message: str | None = None) -> None:
        names = ", ".join(dict.fromkeys(e.field_name for e in errors))
        super().__init__(message or f"invalid value of field(s): {names}")
        self.errors = errors

    def body(self) -> dict[str, Any]:
        grouped: dict[str, list[FieldError]] = {}
        for e in self.errors:
            grouped.setdefault(e.field_name, []).append(e)
        out = super().body()
        out["field_errors"] = [
            {
                "field_name": name,
                "name": "ERROR_FIELD_VALIDATION",
                "code": 40002,
                "errors": [{"code": e.code, "name": e.name, "message": e.message} for e in errors],
            }
            for name, errors in grouped.items()
        ]
        return out


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
        return {**super().body(), "data": self.data}
