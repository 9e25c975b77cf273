"""The OpenAPI document, written from the entity registry: every real route, its body and errors.

The handlers are generic (one set for all entity types), so FastAPI cannot see their shapes;
this module describes each entity's routes from the same data the handlers validate with.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

from crmhooks.api.routes import PREFIX
from crmhooks.changes.links import nested_lists
from crmhooks.hooks.names import EVENT_NAMES
from crmhooks.schema.custom import API_NAME_RE
from crmhooks.schema.registry import BUILTIN
from crmhooks.schema.types import EntityType, Field, Kind

ERROR_STATUSES = {
    "400": "Bad parameter or malformed JSON (ERROR_PARAMETER_INVALID)",
    "401": "Missing, wrong, revoked or expired API key and secret (ERROR_UNAUTHORIZED)",
    "404": "No such collection (ERROR_UNKNOWN_TYPE) or record (ERROR_ENTITY_NOT_FOUND)",
    "405": "Method not allowed (ERROR_METHOD_NOT_ALLOWED)",
    "413": "Body over the size limit (ERROR_PAYLOAD_TOO_LARGE)",
    "422": "A field is wrong; field_errors names it (ERROR_ENTITY_VALIDATION)",
    "429": "Too many failed authentications lately; see Retry-After (ERROR_TOO_MANY_REQUESTS)",
    "410": "A change feed cursor older than retention keeps; see oldest_cursor "
    "(ERROR_CURSOR_EXPIRED)",
}

_INNER_ERROR: dict[str, Any] = {
    "type": "object",
    "properties": {
        "code": {"type": "integer"},
        "name": {"type": "string"},
        "message": {"type": "string"},
        "field_id": {"type": ["string", "null"], "format": "uuid"},
        "field_name": {"type": "string"},
    },
}

# Pipeliner's error body; the entity_* keys, field_errors and step_checklist_errors come with a
# 422 ERROR_ENTITY_VALIDATION (docs/api.md).
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["success", "http_status", "code", "name", "message"],
    "properties": {
        "success": {"const": False},
        "http_status": {"type": "integer"},
        "code": {"type": "integer"},
        "name": {"type": "string"},
        "message": {"type": "string"},
        "entity_id": {"type": ["string", "null"], "format": "uuid"},
        "entity_name": {"type": ["string", "null"]},
        "entity_errors": {"type": "array", "items": _INNER_ERROR},
        "field_errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "field_id": {"type": ["string", "null"], "format": "uuid"},
                    "field_name": {"type": "string"},
                    "name": {"type": "string"},
                    "code": {"type": "integer"},
                    "errors": {"type": "array", "items": _INNER_ERROR},
                },
            },
        },
        "step_checklist_errors": {"type": "array", "items": {}},
        "entity_index": {"type": ["integer", "null"]},
        "index": {"type": "integer"},
        "data": {"type": "array"},
    },
}


# The fields kept as free JSON, each checked by its entity type's own rule.
JSON_FIELDS: dict[str, dict[str, Any]] = {
    "fields": {  # CustomEntities: the declared fields of a custom entity
        "type": "array",
        "items": {
            "type": "object",
            "required": ["api_name", "type"],
            "additionalProperties": False,
            "properties": {
                "api_name": {"type": "string", "pattern": "^[A-Za-z][A-Za-z0-9_]{0,62}$"},
                "type": {
                    "enum": ["text", "integer", "float", "boolean", "date", "datetime", "uuid"]
                },
            },
        },
    },
    "events": {  # Webhooks
        "type": "array",
        "minItems": 1,
        "items": {"type": "string", "enum": sorted(EVENT_NAMES)},
    },
    "form_edit": {"type": "object"},  # activity and record types: a form layout, kept as given
    "pipelines": {"type": "array", "items": {"type": "string", "format": "uuid"}},  # Profiles
    "settings": {"type": "object"},  # Profiles: a screen's view settings
    "options": {  # Webhooks: docs/webhooks.md#options
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "custom_entity_api_name": {"type": "array", "items": {"type": "string"}},
            "entity": {"type": "object", "additionalProperties": {"type": "object"}},
            "related_entity": {"type": "object"},
            "skip_keys": {"type": "array", "items": {"type": "string"}},
            "chunk_size": {"type": "integer", "minimum": 1, "maximum": 100},
            "chunk_delay": {"type": "number", "minimum": 0},
        },
    },
}


def field_schema(f: Field) -> dict[str, Any]:
    k = f.kind
    if k is Kind.OBJECT:
        schema: dict[str, Any] = {
            "type": "object",
            "additionalProperties": False,
            "properties": {s.name: field_schema(s) for s in f.subfields},
        }
    elif k is Kind.JSON:
        schema = JSON_FIELDS[f.name]
    elif k is Kind.ENUM:
        schema = {"type": "integer", "enum": sorted(set((f.choices or {}).values()))}
    else:
        plain: dict[Kind, dict[str, Any]] = {
            Kind.TEXT: {"type": "string"},
            Kind.INTEGER: {"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1},
            Kind.FLOAT: {"type": "number"},
            Kind.BOOLEAN: {"type": "boolean"},
            Kind.DATE: {"type": "string", "format": "date"},
            Kind.DATETIME: {"type": "string", "format": "date-time"},
            Kind.UUID: {"type": "string", "format": "uuid"},
        }
        schema = plain[k]
        if f.max_length:
            schema = {**schema, "maxLength": f.max_length}
    if f.required:
        return schema
    return {"anyOf": [schema, {"type": "null"}]}


def write_schema(et: EntityType, *, create: bool) -> dict[str, Any]:
    writable = [f for f in et.fields if not f.read_only and (create or not f.fixed_after_create)]
    schema: dict[str, Any] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {f.name: field_schema(f) for f in writable},
    }
    # Relation rows written nested (docs/api.md, Relations).
    for name in nested_lists(et):
        schema["properties"][name] = {"type": ["array", "null"], "items": {"type": "object"}}
    required = [f.name for f in writable if f.required]
    if create and required:
        schema["required"] = required
    return schema


def _param(name: str, where: str, schema: dict[str, Any], required: bool = False) -> Any:
    return {"name": name, "in": where, "required": required, "schema": schema}


# Every sum of the validation-level bits (docs/api.md).
_LEVELS = sorted({sum(bits) for n in range(5) for bits in combinations((2, 4, 8, 16), n)})


SPACE = _param("space_id", "path", {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}, True)
RECORD = _param("record_id", "path", {"type": "string", "format": "uuid"}, True)
LIST_PARAMS = [
    _param("first", "query", {"type": "integer", "minimum": 1, "maximum": 100}),
    _param("last", "query", {"type": "integer", "minimum": 1, "maximum": 100}),
    _param("after", "query", {"type": "string"}),
    _param("before", "query", {"type": "string"}),
    _param("order-by", "query", {"type": "string"}),
    _param("include-deleted", "query", {"type": "boolean"}),
]
LIST_PARAMS.append(
    {
        **_param("include_deleted", "query", {"type": "boolean"}),
        "description": "The same as include-deleted (Pipeliner's documentation spells it so); "
        "give one of them",
    }
)
INCLUDE_DELETED = LIST_PARAMS[-2:]
TIMEZONE = {
    "name": "Timezone",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "maxLength": 64},
    "description": "An IANA time zone (America/Chicago): date-times of the answer are written "
    "in it, and date-times without an offset in the request are read in it",
    "example": "America/Chicago",
}
VALIDATION_LEVEL = {
    **_param("validation-level", "query", {"type": "integer", "enum": _LEVELS}),
    "description": "Bit mask: 0 check every field; 2 only changed fields; 4 only system fields; "
    "8 may set read-only created and status dates; 16 a relation may name a deleted record",
}
SHAPE_PARAMS = [
    {
        **_param("expand", "query", {"type": "string"}),
        "description": "Relations to embed, comma-separated, dotted for deeper ones",
    },
    {
        **_param("load-only", "query", {"type": "string"}),
        "description": "Fields to keep, comma-separated, dotted into expanded relations",
    },
]
FILTER_PARAMS = [
    {
        "name": "filter",
        "in": "query",
        "style": "deepObject",
        "explode": True,
        "schema": {"type": "object", "additionalProperties": {"type": "string"}},
        "description": "filter[field]=value; a comma in an eq / not-eq value means any of",
    },
    {
        "name": "filter-op",
        "in": "query",
        "style": "deepObject",
        "explode": True,
        "schema": {"type": "object", "additionalProperties": {"type": "string"}},
        "description": "filter-op[field]=operator: eq ieq not-eq not-ieq contains starts ends "
        "icontains istarts iends null not-null empty not-empty gt gte lt lte between",
    },
]
ROLLBACK = {
    **_param("rollback-method", "query", {"type": "integer", "enum": [0, 1]}),
    "description": "0 (default): all or nothing; 1: keep the items that succeeded",
}


def _responses(ok: str, ok_schema: dict[str, Any], *errors: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        ok: {"description": "Success", "content": {"application/json": {"schema": ok_schema}}}
    }
    for code in ("400", "401", "429", *errors):
        out[code] = {
            "description": ERROR_STATUSES[code],
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
    return out


def _one(ref: str) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"success": {"const": True}, "data": {"$ref": ref}},
    }


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _entity_paths(et: EntityType, path_name: str, extra: list[Any]) -> dict[str, Any]:
    ref = f"#/components/schemas/{et.name}"
    tag = [et.name]
    base = [SPACE, *extra]
    listing = {
        "type": "object",
        "properties": {
            "success": {"const": True},
            "data": {"type": "array", "items": {"$ref": ref}},
            "total": {"type": "integer"},
            "page_info": {"type": "object"},
        },
    }
    deleted = {"type": "object", "properties": {"data": {"type": "string", "format": "uuid"}}}
    return {
        f"{PREFIX}/entities/{path_name}": {
            "get": {
                "tags": tag,
                "summary": f"List {et.name}",
                "parameters": [*base, *LIST_PARAMS, *FILTER_PARAMS, *SHAPE_PARAMS, TIMEZONE],
                "responses": _responses("200", listing, "404"),
            },
            "post": {
                "tags": tag,
                "summary": f"Create one of {et.name}",
                "parameters": [*base, *SHAPE_PARAMS, VALIDATION_LEVEL, TIMEZONE],
                "requestBody": _body(write_schema(et, create=True)),
                "responses": _responses("201", _one(ref), "404", "413", "422"),
            },
        },
        **_batch_paths(et, path_name, base),
        f"{PREFIX}/entities/{path_name}/{{record_id}}": {
            "get": {
                "tags": tag,
                "summary": f"Read one of {et.name}",
                "parameters": [*base, RECORD, *INCLUDE_DELETED, *SHAPE_PARAMS, TIMEZONE],
                "responses": _responses("200", _one(ref), "404"),
            },
            "patch": {
                "tags": tag,
                "summary": f"Change fields of one of {et.name}",
                "parameters": [*base, RECORD, *SHAPE_PARAMS, VALIDATION_LEVEL, TIMEZONE],
                "requestBody": _body(write_schema(et, create=False)),
                "responses": _responses("200", _one(ref), "404", "413", "422"),
            },
            "delete": {
                "tags": tag,
                "summary": f"Soft-delete one of {et.name}",
                "parameters": [*base, RECORD, VALIDATION_LEVEL],
                "responses": _responses("200", deleted, "404"),
            },
        },
    }


def _read_only_paths(paths: dict[str, Any]) -> dict[str, Any]:
    """An entity type read through the API only (Profiles): its GET routes; writes are 405."""
    return {path: {"get": ops["get"]} for path, ops in paths.items() if "get" in ops}


def _batch_paths(et: EntityType, path_name: str, base: list[Any]) -> dict[str, Any]:
    update = {**write_schema(et, create=False)}
    update["properties"] = {**update["properties"], "id": {"type": "string", "format": "uuid"}}
    items = {"type": "array", "items": {"anyOf": [write_schema(et, create=True), update]}}
    ids = {"type": "array", "items": {"type": "string", "format": "uuid"}}
    results = {"type": "object", "properties": {"success": {"const": True}, "data": {}}}
    out = {}
    for action, body, summary in (
        ("batch-modify", items, "Create (no id) and update (with id) many"),
        ("batch-delete", ids, "Soft-delete many"),
        ("batch-restore", ids, "Restore many soft-deleted"),
    ):
        out[f"{PREFIX}/entities/{path_name}/{action}"] = {
            "post": {
                "tags": [et.name],
                "summary": f"{summary} {et.name}",
                "parameters": [*base, ROLLBACK, VALIDATION_LEVEL, TIMEZONE],
                "requestBody": _body(body),
                "responses": _responses("200", results, "404", "413", "422"),
            }
        }
    return out


def record_schema(et: EntityType) -> dict[str, Any]:
    props: dict[str, Any] = {}
    for f in et.fields:
        if f.hidden:
            continue
        props[f.name] = field_schema(f)
        if f.target:
            for name in f.shown_names:
                props[name] = {"type": ["string", "null"], "format": "uri"}
    for link in et.kind_links:
        props[link.name] = {"type": ["string", "null"], "format": "uri"}
    for tm in et.to_many:
        props[tm.name] = {"type": "array", "items": {"type": "string", "format": "uri"}}
    return {"type": "object", "properties": props}


def delivery_paths() -> dict[str, Any]:
    """The delivery log and replay routes (docs/deliveries.md), explain and the change feed
    (docs/webhooks.md), and the operations routes."""
    hook = _param("webhook_id", "path", {"type": "string", "format": "uuid"}, True)
    delivery = _param("delivery_id", "path", {"type": "string", "format": "uuid"}, True)
    base = f"{PREFIX}/entities/Webhooks/{{webhook_id}}"
    obj: dict[str, Any] = {"type": "object"}
    tag = ["Webhook deliveries"]
    times: dict[str, Any] = {
        "since": {"type": "string", "format": "date-time"},
        "until": {"type": "string", "format": "date-time"},
    }
    window = {"type": "object", "required": ["since"], "additionalProperties": False}
    replay_window = {**window, "properties": {**times, "dry_run": {"type": "boolean"}}}
    window = {**window, "properties": times}
    log_params = [
        _param("status", "query", {"type": "string"}),
        _param("since", "query", {"type": "string", "format": "date-time"}),
        _param("until", "query", {"type": "string", "format": "date-time"}),
        _param("first", "query", {"type": "integer", "minimum": 1, "maximum": 100}),
        _param("after", "query", {"type": "string"}),
    ]
    return {
        f"{base}/deliveries": {
            "get": {
                "tags": tag,
                "summary": "The webhook's requests, newest first, with every attempt",
                "parameters": [SPACE, hook, *log_params],
                "responses": _responses("200", obj, "404"),
            }
        },
        f"{base}/deliveries/{{delivery_id}}": {
            "get": {
                "tags": tag,
                "summary": "One request and its attempts",
                "parameters": [SPACE, hook, delivery],
                "responses": _responses("200", obj, "404"),
            }
        },
        f"{base}/deliveries/{{delivery_id}}/resend": {
            "post": {
                "tags": tag,
                "summary": "Send a request again, now",
                "parameters": [SPACE, hook, delivery],
                "responses": _responses("200", obj, "404"),
            }
        },
        f"{base}/recover": {
            "post": {
                "tags": tag,
                "summary": "Send again every failed request created in a window",
                "parameters": [SPACE, hook],
                "requestBody": _body(window),
                "responses": _responses("200", obj, "404"),
            }
        },
        f"{base}/replay": {
            "post": {
                "tags": tag,
                "summary": "Plan a window's stored events that match the webhook as new requests",
                "parameters": [SPACE, hook],
                "requestBody": _body(replay_window),
                "responses": _responses("200", obj, "404", "410"),
            }
        },
        f"{base}/explain": {
            "get": {
                "tags": tag,
                "summary": "Why the webhook fired for a stored event, or not: every matching rule",
                "parameters": [
                    SPACE,
                    hook,
                    _param("event_id", "query", {"type": "string", "format": "uuid"}, True),
                ],
                "responses": _responses("200", obj, "404"),
            }
        },
        f"{PREFIX}/events": {
            "get": {
                "tags": ["Change feed"],
                "summary": "The space's stored events, oldest first, with a cursor; a long-poll",
                "parameters": [
                    SPACE,
                    _param("first", "query", {"type": "integer", "minimum": 1, "maximum": 100}),
                    _param("after", "query", {"type": "string"}),
                    _param("filter[event]", "query", {"type": "string"}),
                    _param("filter[entity_id]", "query", {"type": "string", "format": "uuid"}),
                    _param("wait", "query", {"type": "number", "minimum": 0, "maximum": 30}),
                ],
                "responses": _responses("200", obj, "410"),
            }
        },
        f"{base}/test": {
            "post": {
                "tags": tag,
                "summary": "Send a sample event now and answer the outcome",
                "parameters": [SPACE, hook],
                "responses": _responses("200", obj, "404"),
            }
        },
        "/health": {
            "get": {
                "tags": ["Operations"],
                "summary": "Database reachable, dispatcher alive, queue depth",
                "security": [],
                "responses": {"200": {"description": "Healthy"}, "503": {"description": "Not"}},
            }
        },
        "/metrics": {
            "get": {
                "tags": ["Operations"],
                "summary": "Prometheus metrics",
                "security": [],
                "responses": {"200": {"description": "Prometheus text format"}},
            }
        },
    }


def build_openapi(version: str) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {"Error": ERROR_SCHEMA}
    for et in BUILTIN.values():
        entity_paths = _entity_paths(et, et.name, [])
        paths.update(entity_paths if et.writable else _read_only_paths(entity_paths))
        schemas[et.name] = record_schema(et)
    custom = _param("custom_entity", "path", {"type": "string", "pattern": API_NAME_RE.pattern})
    custom["required"] = True
    custom["description"] = "api_name of a custom entity defined under CustomEntities"
    generic = EntityType(
        name="CustomEntityRecord",
        singular="CustomEntityRecord",
        table="custom_entity_records",
        fields=tuple(f for f in BUILTIN["Accounts"].fields if f.name in ("id", "name", "owner_id")),
    )
    custom_paths = _entity_paths(generic, "{custom_entity}", [custom])
    for ops in custom_paths.values():
        for op in ops.values():
            if "requestBody" in op:
                op["requestBody"] = _body({"type": "object"})
    paths.update(custom_paths)
    schemas["CustomEntityRecord"] = {"type": "object", "additionalProperties": True}
    lead_ref = _one("#/components/schemas/Opportunities")
    paths[f"{PREFIX}/entities/Leads/{{record_id}}/qualify"] = {
        "post": {
            "tags": ["Leads"],
            "summary": "Turn a Lead into an Opportunity with the same id",
            "parameters": [SPACE, RECORD],
            "requestBody": {
                "required": False,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                name: field_schema(BUILTIN["Opportunities"].by_name[name])
                                for name in ("step_id", "value", "closing_date")
                            },
                        }
                    }
                },
            },
            "responses": _responses("200", lead_ref, "404", "422"),
        }
    }
    paths[f"{PREFIX}/entities/Opportunities/{{record_id}}/back-to-lead"] = {
        "post": {
            "tags": ["Opportunities"],
            "summary": "Turn an Opportunity back into a Lead with the same id",
            "parameters": [SPACE, RECORD],
            "responses": _responses("200", _one("#/components/schemas/Leads"), "404", "422"),
        }
    }
    paths.update(delivery_paths())
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "crmhooks",
            "version": version,
            "description": "A Pipeliner-compatible CRM REST API (v100) with webhooks.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"basic": {"type": "http", "scheme": "basic"}},
        },
        "security": [{"basic": []}],
    }
