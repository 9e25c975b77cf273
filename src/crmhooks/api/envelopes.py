"""The success and error envelopes (docs/api.md#envelopes), serialised with orjson."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from crmhooks.errors import ApiError


class JSONBody(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def one(record: Any, status: int = 200) -> Response:
    return JSONBody({"success": True, "data": record}, status_code=status)


def many(records: list[Any], total: int, page_info: dict[str, Any]) -> Response:
    return JSONBody({"success": True, "data": records, "total": total, "page_info": page_info})


def error(exc: ApiError) -> Response:
    return JSONBody(exc.body(), status_code=exc.http_status, headers=exc.headers())
