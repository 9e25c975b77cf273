"""HTML forms in and out: the urlencoded body, the webhook form, the log's filters.

Pure functions. A webhook form becomes the same JSON body a client would send to
``POST /entities/Webhooks``, so the write path and its validator judge both alike; their
``ValidationFailed`` comes back here to be shown next to the field it names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import orjson

from crmhooks.delivery.model import DeliveryStatus
from crmhooks.errors import FIELD_TYPE, ParameterInvalid, ValidationFailed, field_error
from crmhooks.hooks.names import EVENT_NAMES

Form = dict[str, list[str]]
FORM_TYPE = "application/x-www-form-urlencoded"
MAX_FIELDS = 500
SCHEMES = ("pipeliner", "standard-webhooks")
STATUSES = tuple(DeliveryStatus)  # pending, delivered, failed


def parse_form(body: bytes, content_type: str | None) -> Form:
    """An urlencoded body as lists of values by name; any other body as no fields at all."""
    if (content_type or "").split(";", 1)[0].strip().lower() != FORM_TYPE:
        return {}
    try:
        text = body.decode("utf-8")
        return parse_qs(text, keep_blank_values=True, max_num_fields=MAX_FIELDS)
    except (UnicodeDecodeError, ValueError) as e:
        raise ParameterInvalid(f"the form could not be read: {e}") from None


def one(form: Form, name: str, default: str = "") -> str:
    """The first value of a field, or ``default``."""
    values = form.get(name)
    return values[0] if values else default


def event_groups() -> list[tuple[str, list[str]]]:
    """Every event name a webhook may list, grouped by entity: the wildcard first in each."""
    groups: dict[str, list[str]] = {}
    for name in EVENT_NAMES:
        prefix = name.split(".", 1)[0]
        groups.setdefault("All" if name == "*" else prefix, []).append(name)

    def order(group: tuple[str, list[str]]) -> tuple[int, str]:
        title = group[0]
        return (0 if title == "All" else 2 if title == "CustomEntity" else 1, title)

    return [
        (title, sorted(names, key=lambda n: (not n.endswith("*"), n)))
        for title, names in sorted(groups.items(), key=order)
    ]


@dataclass
class WebhookForm:
    """What the webhook form holds, as typed (so a refused form is shown again as it was)."""

    url: str = ""
    events: list[str] = field(default_factory=list)
    insecure_ssl: bool = False
    options: str = "{}"
    signature: str = ""
    signature_scheme: str = "pipeliner"
    client_id: str = ""


def read_webhook_form(form: Form) -> WebhookForm:
    return WebhookForm(
        url=one(form, "url").strip(),
        events=[e for e in form.get("events", []) if e],
        insecure_ssl=one(form, "insecure_ssl") == "on",
        options=one(form, "options", "{}"),
        signature=one(form, "signature").strip(),
        signature_scheme=one(form, "signature_scheme", "pipeliner"),
        client_id=one(form, "client_id").strip(),
    )


def form_of_record(record: Mapping[str, Any]) -> WebhookForm:
    """The form for editing a stored webhook (its secret is never put back in the page)."""
    return WebhookForm(
        url=str(record.get("url") or ""),
        events=list(record.get("events") or []),
        insecure_ssl=bool(record.get("insecure_ssl")),
        options=orjson.dumps(record.get("options") or {}, option=orjson.OPT_INDENT_2).decode(),
        signature="",
        signature_scheme=str(record.get("signature_scheme") or "pipeliner"),
        client_id=str(record.get("client_id") or ""),
    )


def webhook_body(f: WebhookForm, *, creating: bool) -> dict[str, Any]:
    """The API body the form stands for. Options that are not a JSON object are refused here,
    with the message the field shows; everything else is left to the server's validator.

    On edit an empty secret keeps the stored one; an empty owner clears it.
    """
    try:
        options = orjson.loads(f.options) if f.options.strip() else {}
    except orjson.JSONDecodeError as e:
        raise ValidationFailed(
            [field_error("options", FIELD_TYPE, f"not valid JSON: {e}")]
        ) from None
    if not isinstance(options, dict):
        raise ValidationFailed([field_error("options", FIELD_TYPE, "expected a JSON object")])
    body: dict[str, Any] = {
        "url": f.url,
        "events": f.events,
        "insecure_ssl": f.insecure_ssl,
        "options": options,
        "signature_scheme": f.signature_scheme,
    }
    if f.signature:
        body["signature"] = f.signature
    if f.client_id:
        body["client_id"] = f.client_id
    elif not creating:
        body["client_id"] = None
    return body


def errors_by_field(exc: ValidationFailed) -> dict[str, list[str]]:
    """The server's field errors under the form field they belong to (``options.entity.X`` is
    shown at ``options``, with its full path)."""
    out: dict[str, list[str]] = {}
    for e in exc.errors:
        top = e.field_name.split(".", 1)[0]
        text = e.message if e.field_name == top else f"{e.field_name}: {e.message}"
        out.setdefault(top, []).append(text)
    return out


def log_params(query: Mapping[str, str]) -> dict[str, str]:
    """The delivery log's filters from the page's query string, in the API's terms.

    ``datetime-local`` inputs give ``2026-11-27T10:00``: read as UTC, as the page says.
    """
    params = {}
    for name in ("status", "since", "until", "after"):
        value = query.get(name, "").strip()
        if value:
            params[name] = value
    if params.get("status") not in (None, *STATUSES):
        raise ParameterInvalid(f"status: {params['status']!r} is not one of {', '.join(STATUSES)}")
    return params
