"""The vocabulary entity types are written in: fields, relations, entity types.

An entity type is data, not a class: the registry (``crmhooks.schema.registry``) lists them,
custom entities are built from their definition records at run time, and every other layer
(storage, validation, query, events) reads the same description.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property


class Kind(StrEnum):
    """How a field's value is typed on the wire and stored."""

    TEXT = "text"
    INTEGER = "integer"
    FLOAT = "float"
    BOOLEAN = "boolean"
    DATE = "date"
    DATETIME = "datetime"
    UUID = "uuid"
    ENUM = "enum"  # an integer with names, e.g. status 1 Open, 2 Lost, 3 Won
    OBJECT = "object"  # a fixed set of sub-fields, e.g. Opportunity.value
    JSON = "json"  # free JSON, checked by its entity type's own rule (custom entity fields)


@dataclass(frozen=True)
class Field:
    """One field of an entity type.

    ``column`` is where it is stored; ``None`` means inside the record's JSON ``data`` column
    (custom entity fields). Sub-fields of an OBJECT are stored as ``{column}__{sub}``.
    """

    name: str
    kind: Kind
    required: bool = False
    read_only: bool = False
    fixed_after_create: bool = False
    max_length: int | None = None
    choices: Mapping[str, int] | None = None  # ENUM: name -> number
    target: str | None = None  # relation (*_id) fields: the target entity type's name
    subfields: tuple[Field, ...] = ()
    column: str | None = ""  # "" means: same as name
    default: object = None
    secret: bool = False  # shown masked, except in the response that created it
    hidden: bool = False  # kept for the server's own use, never shown
    # A relation into a shared table shown under one name per kind of the related record in
    # place of ``relation_name`` (a Note's ``lead`` / ``oppty``): (route name, shown name) pairs.
    uri_by_kind: tuple[tuple[str, str], ...] = ()

    @property
    def column_name(self) -> str | None:
        return self.name if self.column == "" else self.column

    @property
    def is_relation(self) -> bool:
        return self.target is not None

    @cached_property
    def relation_name(self) -> str:
        """``owner_id`` -> ``owner``: the name the related record's URI is shown under."""
        return self.name[:-3] if self.name.endswith("_id") else self.name

    @cached_property
    def shown_names(self) -> tuple[str, ...]:
        """Every name the related record's URI is shown under (one unless ``uri_by_kind``)."""
        if self.uri_by_kind:
            return tuple(name for _, name in self.uri_by_kind)
        return (self.relation_name,)


@dataclass(frozen=True)
class ToMany:
    """A list of records of ``source`` that point at this record through ``via``.

    One relation entity can back several lists (a Task's ``account_relations`` and
    ``contact_relations`` are both ActivityRelations): ``nonnull`` keeps the rows whose column
    of that name is set, ``kind`` the rows whose ``lead_oppty_id`` is now of that kind.
    """

    name: str
    source: str
    via: str
    nonnull: str | None = None
    kind: str | None = None  # "Lead" or "Opportunity"


@dataclass(frozen=True)
class KindLink:
    """A URI shown when an id that may name records of several entity types (not a relation:
    Tasks and Appointments have tables of their own) names one of ``route``: Pipeliner's
    ``task`` and ``appointment`` beside ``activity_id``, ``email`` beside ``message_id``.
    ``by`` is the stored column that says which entity type the id names. (A relation into a
    shared table, ``lead_oppty_id``, says it with ``Field.uri_by_kind``.)"""

    name: str
    field: str
    route: str
    by: str


@dataclass(frozen=True)
class EntityType:
    """One kind of record: its routes, fields, storage and the events it raises."""

    name: str  # the plural route name, e.g. "Accounts", "CE_Bid"
    singular: str  # e.g. "Account"; webhook options are keyed by it
    table: str
    fields: tuple[Field, ...]
    events: tuple[str, ...] = ()
    event_prefix: str = ""  # e.g. "Account", "CustomEntity"
    to_many: tuple[ToMany, ...] = ()
    # A shared table holds several entity types; this column/value picks this one's rows.
    discriminator: tuple[str, str] | None = None
    # Groups of fields of which at least one must be non-empty on create.
    one_of_required: tuple[tuple[str, ...], ...] = ()
    # Entity types that a relation may name in place of this one (e.g. LeadOpptys).
    custom: bool = False
    kind_links: tuple[KindLink, ...] = ()
    # False: only read through the API (Profiles); every write route answers 405.
    writable: bool = True

    @cached_property
    def by_name(self) -> dict[str, Field]:
        return {f.name: f for f in self.fields}

    @cached_property
    def relations(self) -> tuple[Field, ...]:
        return tuple(f for f in self.fields if f.is_relation)

    def field(self, name: str) -> Field | None:
        return self.by_name.get(name)


# Fields every record has; they are written by the server only.
SYSTEM_FIELDS: tuple[Field, ...] = (
    Field("id", Kind.UUID, read_only=True),
    Field("created", Kind.DATETIME, read_only=True),
    Field("modified", Kind.DATETIME, read_only=True),
    Field("is_deleted", Kind.BOOLEAN, read_only=True, default=False),
    Field("revision", Kind.INTEGER, read_only=True, default=1),
)


def with_system(*fields: Field) -> tuple[Field, ...]:
    return SYSTEM_FIELDS + tuple(fields)
