"""Every built-in entity type (docs/api.md#entities), as one table of data."""

from __future__ import annotations

from dataclasses import replace
from types import MappingProxyType

from crmhooks.schema.types import EntityType, Field, Kind, KindLink, ToMany, with_system

STANDARD_EVENTS = ("Create", "Update", "Delete", "DocumentLinked", "OwnerChanged")


def text(name: str, *, required: bool = False, max_length: int | None = 255) -> Field:
    return Field(name, Kind.TEXT, required=required, max_length=max_length)


def long_text(name: str, *, required: bool = False) -> Field:
    return Field(name, Kind.TEXT, required=required, max_length=100_000)


def rel(name: str, target: str, *, required: bool = False, fixed: bool = False) -> Field:
    return Field(name, Kind.UUID, required=required, target=target, fixed_after_create=fixed)


def lead_or_oppty(*, required: bool = False, fixed: bool = False) -> Field:
    """``lead_oppty_id``, shown as ``lead`` or ``oppty`` by what the record is now (the other
    null), as Pipeliner shows a LeadOppty relation; each expands as itself."""
    return Field(
        "lead_oppty_id",
        Kind.UUID,
        required=required,
        target="LeadOpptys",
        fixed_after_create=fixed,
        uri_by_kind=(("Leads", "lead"), ("Opportunities", "oppty")),
    )


def enum(
    name: str, choices: dict[str, int], default: int | None = None, *, required: bool = False
) -> Field:
    return Field(
        name, Kind.ENUM, choices=MappingProxyType(choices), default=default, required=required
    )


def numbered(name: str, count: int) -> Field:
    return enum(name, {str(i): i for i in range(1, count + 1)})


def flag(name: str) -> Field:
    return Field(name, Kind.BOOLEAN, default=False)


def read_only(name: str, kind: Kind) -> Field:
    return Field(name, kind, read_only=True)


def _many(prefix: str, count: int) -> tuple[Field, ...]:
    return tuple(text(f"{prefix}{i}") for i in range(1, count + 1))


def _documents(via: str) -> ToMany:
    """A record's documents: the CloudObjectRelations that link a CloudObject to it."""
    return ToMany("documents", "CloudObjectRelations", via)


OWNER = rel("owner_id", "Clients")
# Pipeliner requires an owner on create for these (Account, Contact, Opportunity, Appointment).
OWNER_REQUIRED = rel("owner_id", "Clients", required=True)
LEAD_STATUS = {"Open": 1, "Lost": 2}
OPPTY_STATUS = {"Open": 1, "Lost": 2, "Won": 3}

# Lead and Opportunity are one record that changes kind (Pipeliner's LeadOppty): they share a
# table and an id space, told apart by ``kind``. Opportunity-only columns stay on the row while
# it is a Lead, so a record qualified again gets them back.
_LEAD_OPPTY_COMMON = (
    text("name", required=True),
    rel("primary_account_id", "Accounts"),
    rel("primary_contact_id", "Contacts"),
    flag("is_archived"),
    read_only("was_qualified", Kind.BOOLEAN),
    read_only("qualify_date", Kind.DATETIME),
    read_only("lost_date", Kind.DATETIME),
)

_VALUE = Field(
    "value",
    Kind.OBJECT,
    subfields=(
        Field("base_value", Kind.FLOAT),
        Field("currency_id", Kind.TEXT, max_length=64),
        Field("value_foreign", Kind.FLOAT),
    ),
)

# Pipeliner's to-many links are rows of relation entities (below); a parent shows them as lists.
_LEAD_OPPTY_RELATIONS = (
    ToMany("account_relations", "LeadOpptyAccountRelations", "lead_oppty_id"),
    ToMany("contact_relations", "LeadOpptyContactRelations", "lead_oppty_id"),
)
_ACTIVITY_RELATIONS = (
    ToMany("account_relations", "ActivityRelations", "activity_id", nonnull="account_id"),
    ToMany("contact_relations", "ActivityRelations", "activity_id", nonnull="contact_id"),
    ToMany("lead_relations", "ActivityRelations", "activity_id", kind="Lead"),
    ToMany("opportunity_relations", "ActivityRelations", "activity_id", kind="Opportunity"),
    ToMany(
        "custom_entity_relations", "ActivityRelations", "activity_id", nonnull="custom_entity_id"
    ),
)

_TYPES: tuple[EntityType, ...] = (
    EntityType(
        name="Clients",
        singular="Client",
        table="clients",
        fields=with_system(text("first_name"), text("last_name"), text("email")),
        one_of_required=(("first_name", "last_name", "email"),),
    ),
    EntityType(
        name="Accounts",
        singular="Account",
        table="accounts",
        fields=with_system(
            text("name", required=True),
            OWNER_REQUIRED,
            *_many("email", 5),
            *_many("phone", 5),
            text("address", max_length=1000),
            text("city"),
            text("zip_code"),
            text("state_province"),
            text("country"),
            text("home_page", max_length=2000),
            long_text("comments"),
            rel("parent_account_id", "Accounts"),
            flag("is_archived"),
        ),
        events=STANDARD_EVENTS,
        event_prefix="Account",
        to_many=(_documents("account_id"),),
    ),
    EntityType(
        name="Contacts",
        singular="Contact",
        table="contacts",
        fields=with_system(
            text("first_name"),
            text("last_name"),
            OWNER_REQUIRED,
            text("title"),
            text("position"),
            *_many("email", 5),
            *_many("phone", 5),
            rel("primary_account_id", "Accounts"),
            flag("is_archived"),
        ),
        events=STANDARD_EVENTS,
        event_prefix="Contact",
        to_many=(
            ToMany("account_relations", "ContactAccountRelations", "contact_id"),
            _documents("contact_id"),
        ),
    ),
    EntityType(
        name="Leads",
        singular="Lead",
        table="lead_opptys",
        fields=with_system(
            *_LEAD_OPPTY_COMMON,
            OWNER,
            rel("step_id", "Steps"),
            enum("status", LEAD_STATUS, default=1),
        ),
        events=(*STANDARD_EVENTS, "Lost", "BackToLead"),
        event_prefix="Lead",
        to_many=(*_LEAD_OPPTY_RELATIONS, _documents("lead_oppty_id")),
        discriminator=("kind", "Lead"),
    ),
    EntityType(
        name="Opportunities",
        singular="Opportunity",
        table="lead_opptys",
        fields=with_system(
            *_LEAD_OPPTY_COMMON,
            OWNER_REQUIRED,
            rel("step_id", "Steps", required=True),
            enum("status", OPPTY_STATUS, default=1),
            Field("closing_date", Kind.DATE, required=True),
            replace(_VALUE, required=True),
            read_only("won_date", Kind.DATETIME),
        ),
        events=(*STANDARD_EVENTS, "Move", "Lost", "Won", "Qualify"),
        event_prefix="Opportunity",
        to_many=(
            *_LEAD_OPPTY_RELATIONS,
            ToMany("product_relations", "OpptyProductRelations", "oppty_id"),
            _documents("lead_oppty_id"),
        ),
        discriminator=("kind", "Opportunity"),
    ),
    EntityType(
        name="Tasks",
        singular="Task",
        table="tasks",
        fields=with_system(
            text("subject", required=True),
            OWNER,
            long_text("description"),
            Field("due_date", Kind.DATE),
            Field("start_date", Kind.DATE),
            enum("priority", {"Low": 1, "Medium": 2, "High": 3}, default=2),
            enum(
                "status",
                {"NotStarted": 1, "InProgress": 2, "Waiting": 3, "Completed": 4, "Deferred": 5},
                default=1,
            ),
            rel("account_id", "Accounts"),
            rel("contact_id", "Contacts"),
            rel("lead_oppty_id", "LeadOpptys"),
        ),
        events=(*STANDARD_EVENTS, "Comment"),
        event_prefix="Task",
        to_many=(
            *_ACTIVITY_RELATIONS,
            ToMany("comments", "TaskComments", "task_id"),
            _documents("activity_id"),
        ),
    ),
    EntityType(
        name="Emails",
        singular="Email",
        table="emails",
        fields=with_system(
            text("subject", max_length=1000),
            long_text("body"),
            text("sender", max_length=1000),
            text("to", max_length=10_000),
            text("cc", max_length=10_000),
            Field("date_sent", Kind.DATETIME),
            enum("direction", {"Out": 1, "In": 2}, required=True),
            text("uid", required=True),
            OWNER,
            rel("account_id", "Accounts"),
            rel("contact_id", "Contacts"),
            rel("lead_oppty_id", "LeadOpptys"),
        ),
        events=("Create", "Update", "Delete", "DocumentLinked"),
        event_prefix="Email",
        to_many=(_documents("message_id"),),
    ),
    EntityType(
        name="Appointments",
        singular="Appointment",
        table="appointments",
        fields=with_system(
            text("subject", required=True),
            OWNER_REQUIRED,
            Field("start_date", Kind.DATETIME),
            Field("end_date", Kind.DATETIME, required=True),
            text("location", max_length=1000),
            long_text("description"),
            numbered("status", 6),
            rel("account_id", "Accounts"),
            rel("contact_id", "Contacts"),
            rel("lead_oppty_id", "LeadOpptys"),
        ),
        events=(*STANDARD_EVENTS, "Comment"),
        event_prefix="Appointment",
        to_many=(
            *_ACTIVITY_RELATIONS,
            ToMany("comments", "AppointmentComments", "appointment_id"),
            _documents("activity_id"),
        ),
    ),
    EntityType(
        name="Products",
        singular="Product",
        table="products",
        fields=with_system(
            text("name", required=True),
            text("sku"),
            long_text("description"),
            text("unit_symbol", max_length=32),
        ),
        events=("Create", "Update", "Delete"),
        event_prefix="Product",
    ),
    EntityType(
        name="OpptyProductRelations",
        singular="OpptyProductRelation",
        table="oppty_product_relations",
        fields=with_system(
            rel("oppty_id", "Opportunities", required=True),
            rel("product_id", "Products", required=True, fixed=True),
            Field("quantity", Kind.FLOAT, default=1.0),
            Field("price", Kind.FLOAT, default=0.0),
            read_only("amount", Kind.FLOAT),
            long_text("comment"),
        ),
        events=("Create", "Update", "Delete"),
        event_prefix="OpptyProductRelation",
    ),
    EntityType(
        name="Pipelines",
        singular="Pipeline",
        table="pipelines",
        fields=with_system(text("name", required=True)),
        to_many=(ToMany("steps", "Steps", "pipeline_id"),),
    ),
    EntityType(
        name="Steps",
        singular="Step",
        table="steps",
        fields=with_system(
            text("name", required=True),
            rel("pipeline_id", "Pipelines", required=True),
            Field("sort_order", Kind.INTEGER, default=0),
            Field("percent", Kind.INTEGER, default=0),
        ),
    ),
    EntityType(
        name="CloudObjects",
        singular="CloudObject",
        table="cloud_objects",
        fields=with_system(
            text("filename", required=True, max_length=1000),
            text("url", max_length=4000),
            text("type", max_length=255),
            rel("account_id", "Accounts"),
            rel("contact_id", "Contacts"),
            rel("lead_oppty_id", "LeadOpptys"),
            rel("task_id", "Tasks"),
            rel("email_id", "Emails"),
            rel("appointment_id", "Appointments"),
            rel("custom_entity_id", "CustomEntityRecords"),
        ),
    ),
    EntityType(
        name="TaskComments",
        singular="TaskComment",
        table="task_comments",
        fields=with_system(
            rel("task_id", "Tasks", required=True, fixed=True),
            long_text("comment", required=True),
            OWNER,
        ),
    ),
    EntityType(
        name="AppointmentComments",
        singular="AppointmentComment",
        table="appointment_comments",
        fields=with_system(
            rel("appointment_id", "Appointments", required=True, fixed=True),
            long_text("comment", required=True),
            OWNER,
        ),
    ),
    EntityType(
        name="CustomEntities",
        singular="CustomEntity",
        table="custom_entities",
        fields=with_system(
            Field("api_name", Kind.TEXT, required=True, max_length=64, fixed_after_create=True),
            text("name", required=True),
            Field("fields", Kind.JSON, default=()),  # a list; checked by schema.custom
        ),
    ),
)

RELATION_EVENTS = ("Create", "Update", "Delete")
RELATIONSHIP = {"NoRelationship": 0, "Weak": 1, "Moderate": 2, "Strong": 3}


def _primary() -> Field:
    return Field("is_primary", Kind.BOOLEAN, required=True)


# The relation entities (Pipeliner's link rows). The record they hang on (``contact_id``,
# ``lead_oppty_id``, ``activity_id``) is fixed at create; ``is_primary`` marks at most one row
# per record, whose target the record shows as ``primary_account`` / ``primary_contact``.
_RELATION_TYPES: tuple[EntityType, ...] = (
    EntityType(
        name="ContactAccountRelations",
        singular="ContactAccountRelation",
        table="contact_account_relations",
        fields=with_system(
            rel("contact_id", "Contacts", required=True, fixed=True),
            rel("account_id", "Accounts", required=True, fixed=True),
            _primary(),
            long_text("comment"),
            text("position"),
            enum("relationship", RELATIONSHIP),
            flag("is_assistant"),
            flag("is_sibling"),
        ),
        events=RELATION_EVENTS,
        event_prefix="ContactAccountRelation",
    ),
    EntityType(
        name="LeadOpptyAccountRelations",
        singular="LeadOpptyAccountRelation",
        table="lead_oppty_account_relations",
        fields=with_system(
            lead_or_oppty(required=True, fixed=True),
            rel("account_id", "Accounts", required=True, fixed=True),
            _primary(),
        ),
        events=RELATION_EVENTS,
        event_prefix="LeadOpptyAccountRelation",
    ),
    EntityType(
        name="LeadOpptyContactRelations",
        singular="LeadOpptyContactRelation",
        table="lead_oppty_contact_relations",
        fields=with_system(
            lead_or_oppty(required=True, fixed=True),
            rel("contact_id", "Contacts", required=True, fixed=True),
            _primary(),
            long_text("comment"),
            enum("relationship", RELATIONSHIP),
        ),
        events=RELATION_EVENTS,
        event_prefix="LeadOpptyContactRelation",
    ),
    EntityType(
        name="ActivityRelations",
        singular="ActivityRelation",
        table="activity_relations",
        fields=with_system(
            Field("activity_id", Kind.UUID, required=True, fixed_after_create=True),
            # Which entity type activity_id is ("Tasks", "Appointments"): set by the server.
            Field("activity_type", Kind.TEXT, read_only=True, hidden=True, max_length=32),
            rel("account_id", "Accounts", fixed=True),
            rel("contact_id", "Contacts", fixed=True),
            lead_or_oppty(fixed=True),
            rel("custom_entity_id", "CustomEntityRecords", fixed=True),
        ),
        events=RELATION_EVENTS,
        event_prefix="ActivityRelation",
        kind_links=(
            KindLink("task", "activity_id", "Tasks", by="activity_type"),
            KindLink("appointment", "activity_id", "Appointments", by="activity_type"),
        ),
    ),
    # A document linked to one record; no events of its own: creating one raises
    # ``{Entity}.DocumentLinked`` on the record it links.
    EntityType(
        name="CloudObjectRelations",
        singular="CloudObjectRelation",
        table="cloud_object_relations",
        fields=with_system(
            rel("cloud_object_id", "CloudObjects", required=True, fixed=True),
            rel("account_id", "Accounts", fixed=True),
            rel("contact_id", "Contacts", fixed=True),
            lead_or_oppty(fixed=True),
            Field("activity_id", Kind.UUID, fixed_after_create=True),
            Field("activity_type", Kind.TEXT, read_only=True, hidden=True, max_length=32),
            # Pipeliner: an Email or a Memo; here an Email.
            Field("message_id", Kind.UUID, fixed_after_create=True),
            Field("message_type", Kind.TEXT, read_only=True, hidden=True, max_length=32),
            rel("custom_entity_id", "CustomEntityRecords", fixed=True),
        ),
        kind_links=(
            KindLink("task", "activity_id", "Tasks", by="activity_type"),
            KindLink("appointment", "activity_id", "Appointments", by="activity_type"),
            KindLink("email", "message_id", "Emails", by="message_type"),
        ),
    ),
)

# ---------------------------------------------------------------------------------------------
# Pipeliner collections beyond the core table (issue 12; docs/api.md, Pipeliner collections):
# notes, sales units, activity, account and contact types, currencies, product categories,
# profiles; and the fields that point at them from the entities above. Fields, required flags
# and targets as published (docs/api.md, "Compatibility", says what is left out).

_ICON_NAMES = (
    "GeneralIcon", "Task", "Appointment", "Call", "Mail", "Message", "TicketingIntegration",
    "DocumentManagement", "EventManagement", "AccountingSystem", "MarketingCommunicationSystems",
    "OrderProcessing", "WebServices", "ReturnMerchandiseAuthorizationSystems",
    "SalesAutomatization", "SmsMessaging", "ErpSystems", "DataAnalytics", "Warehouses",
    "ContactManagement", "ContentManagementSystems", "InventorySystems", "Workflow",
    "AssetManagementSystem",
)  # fmt: skip
_TYPE_ICON = {name: i for i, name in enumerate(_ICON_NAMES)}  # 0 GeneralIcon .. 23
_PROFILE_SCREEN = {
    "Pipelinescreen": 1, "Timelinescreen": 2, "Archivescreen": 3, "Leadscreen": 4,
    "Accountscreen": 6, "Contactscreen": 7, "Activityscreen": 8, "Feedscreen": 9,
    "Hrmscreen": 10, "Auditscreen": 11, "Navigator": 12, "Insightsscreen": 13,
    "Indicatorsscreen": 14, "Conversionsscreen": 15, "Lifecyclescreen": 16, "Feedscreen2": 17,
    "ProductScreen": 18, "Projectscreen": 19, "Forecastscreen": 20, "LeadArchivescreen": 21,
    "TargetScreen": 22, "Quotescreen": 23, "QuoteArchivescreen": 24, "Approvalscreen": 25,
    "CustomEntityscreen": 26, "AccountArchivescreen": 27, "ContactArchivescreen": 28,
    "FeedDetailScreen": 29, "BetterNavigatorscreen": 30, "FeedEmailscreen": 31,
    "FeedEmailDetailScreen": 32, "EmailScreen": 33,
}  # fmt: skip
SHARE_MODE = {"Standard": 0, "Private": 1, "AllView": 2, "AllEdit": 3}

# A Note names exactly one record (Pipeliner: "exactly one of account/contact/lead_oppty/
# project/quote/custom_entity"; projects and quotes are not implemented here).
NOTE_LINKS = ("account_id", "contact_id", "lead_oppty_id", "custom_entity_id")

_LEAD_OR_OPPTY = lead_or_oppty()


def _activity_type(name: str, singular: str, table: str) -> EntityType:
    return EntityType(
        name=name,
        singular=singular,
        table=table,
        fields=with_system(
            text("name", required=True),
            Field("is_readonly", Kind.BOOLEAN, required=True),
            enum("icon", _TYPE_ICON),
            Field("form_edit", Kind.JSON),
        ),
    )


def _record_type(name: str, singular: str, table: str) -> EntityType:
    return EntityType(
        name=name,
        singular=singular,
        table=table,
        fields=with_system(
            text("name", required=True),
            Field("is_readonly", Kind.BOOLEAN, required=True),
            # Pipeliner's form layout, a blob it requires; kept as given, never read.
            long_text("settings"),
            Field("form_edit", Kind.JSON),
        ),
    )


_PIPELINER_TYPES: tuple[EntityType, ...] = (
    EntityType(
        name="Notes",
        singular="Note",
        table="notes",
        fields=with_system(
            long_text("note", required=True),
            rel("owner_id", "Clients", required=True),
            rel("account_id", "Accounts"),
            rel("contact_id", "Contacts"),
            _LEAD_OR_OPPTY,
            rel("custom_entity_id", "CustomEntityRecords"),
        ),
        events=("Create", "Update", "Delete"),
        event_prefix="Note",
    ),
    EntityType(
        name="SalesUnits",
        singular="SalesUnit",
        table="sales_units",
        fields=with_system(text("name", required=True), rel("parent_id", "SalesUnits")),
    ),
    _activity_type("TaskTypes", "TaskType", "task_types"),
    _activity_type("AppointmentTypes", "AppointmentType", "appointment_types"),
    _record_type("AccountTypes", "AccountType", "account_types"),
    _record_type("ContactTypes", "ContactType", "contact_types"),
    EntityType(
        name="Currencies",
        singular="Currency",
        table="currencies",
        fields=with_system(
            Field("code", Kind.TEXT, required=True, max_length=16, fixed_after_create=True),
            Field("symbol", Kind.TEXT, max_length=16, fixed_after_create=True),
            read_only("is_base", Kind.BOOLEAN),
        ),
        events=("Create", "Update", "Delete"),
        event_prefix="Currency",
    ),
    EntityType(
        name="ProductCategories",
        singular="ProductCategory",
        table="product_categories",
        fields=with_system(text("name", required=True), rel("parent_id", "ProductCategories")),
        to_many=(ToMany("product_relations", "Products", "product_category_id"),),
    ),
    EntityType(
        name="Profiles",
        singular="Profile",
        table="profiles",
        fields=with_system(
            enum("entity", _PROFILE_SCREEN),
            text("entity_api_name"),
            text("name"),
            OWNER,
            Field("pipelines", Kind.JSON),  # a list of Pipeline ids
            Field("settings", Kind.JSON),
            enum("share_mode", SHARE_MODE),
            Field("sync_enabled", Kind.BOOLEAN),
            Field("sync_entity_id", Kind.UUID),  # a Report; reports are not implemented
            enum("type", {"Dynamic": 1, "Static": 2}),
            Field("use_lang", Kind.BOOLEAN),
        ),
        writable=False,
    ),
)

UNIT = rel("unit_id", "SalesUnits")

# The fields of the entity types above that point at these collections.
_PIPELINER_FIELDS: dict[str, tuple[Field, ...]] = {
    "Accounts": (UNIT, rel("account_type_id", "AccountTypes")),
    "Contacts": (UNIT, rel("contact_type_id", "ContactTypes")),
    "Leads": (UNIT,),
    "Opportunities": (UNIT,),
    "LeadOpptys": (UNIT,),
    "Tasks": (UNIT, rel("activity_type_id", "TaskTypes")),
    "Appointments": (UNIT, rel("activity_type_id", "AppointmentTypes")),
    "Products": (rel("product_category_id", "ProductCategories"),),
}

# Relations a create leaves out filled in with the space's default record of the target (the
# oldest live one; a new space gets one of each from ``store.space_defaults``), as Pipeliner
# puts a new record in the creator's default unit and the first activity or record type.
DEFAULTED_RELATIONS = frozenset(
    {"unit_id", "activity_type_id", "account_type_id", "contact_type_id"}
)


def _with_pipeliner_fields(et: EntityType) -> EntityType:
    extra = _PIPELINER_FIELDS.get(et.name, ())
    return replace(et, fields=et.fields + extra) if extra else et


# ---------------------------------------------------------------------------------------------

WEBHOOKS = EntityType(
    name="Webhooks",
    singular="Webhook",
    table="webhooks",
    fields=with_system(
        Field("url", Kind.TEXT, required=True, max_length=2000),
        Field("events", Kind.JSON, required=True),
        Field("insecure_ssl", Kind.BOOLEAN, required=True),
        Field("options", Kind.JSON),
        Field("signature", Kind.TEXT, max_length=255, secret=True),
        Field("signature_scheme", Kind.TEXT, max_length=32, default="pipeliner"),
        rel("client_id", "Clients"),
        Field("is_active", Kind.BOOLEAN, default=True),
        read_only("disabled_reason", Kind.TEXT),
        read_only("application_id", Kind.UUID),
        # The replaced secret, still signed with until ``previous_signature_until``.
        Field("previous_signature", Kind.TEXT, read_only=True, hidden=True, max_length=255),
        Field("previous_signature_until", Kind.DATETIME, read_only=True, hidden=True),
        # Since when every request has failed; cleared by a success (disabling, issue-free).
        Field("failing_since", Kind.DATETIME, read_only=True, hidden=True),
    ),
)

# Relation targets that stand for more than one entity type: any row of the shared table.
GROUPS: dict[str, EntityType] = {
    # What every Lead and Opportunity has: a relation to either can be expanded this far.
    "LeadOpptys": EntityType(
        name="LeadOpptys",
        singular="LeadOppty",
        table="lead_opptys",
        fields=with_system(*_LEAD_OPPTY_COMMON, rel("step_id", "Steps")),
        to_many=(_documents("lead_oppty_id"),),
    ),
    "CustomEntityRecords": EntityType(
        name="CustomEntityRecords",
        singular="CustomEntityRecord",
        table="custom_entity_records",
        fields=with_system(text("name"), OWNER),
        to_many=(_documents("custom_entity_id"),),
    ),
}

CUSTOM_RECORD_TABLE = "custom_entity_records"
CUSTOM_DISCRIMINATOR = "ce_api_name"

BUILTIN: dict[str, EntityType] = {
    t.name: _with_pipeliner_fields(t)
    for t in (*_TYPES, *_RELATION_TYPES, *_PIPELINER_TYPES, WEBHOOKS)
}
GROUPS = {name: _with_pipeliner_fields(group) for name, group in GROUPS.items()}

# The ``CloudObjects`` link fields, and the entity types the link names (None: by the row).
DOCUMENT_LINKS: dict[str, str] = {
    "account_id": "Accounts",
    "contact_id": "Contacts",
    "lead_oppty_id": "LeadOpptys",
    "task_id": "Tasks",
    "email_id": "Emails",
    "appointment_id": "Appointments",
    "custom_entity_id": "CustomEntityRecords",
}


def builtin(name: str) -> EntityType | None:
    return BUILTIN.get(name)
