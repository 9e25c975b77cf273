"""What one request or one webhook may make the server do: the bounds of docs/api.md "Limits".

Every space is hostile to every other, so each cost a request controls has a ceiling here,
read from the environment (``CRMHOOKS_MAX_...``) like the other settings. ``Settings`` extends
:class:`Limits`, so the API passes its settings where limits are wanted; code that runs without
settings (the router compiling stored webhooks) reads :func:`current`.
"""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict


class Limits(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CRMHOOKS_", extra="ignore")

    # Relations in one expand path. Pipeliner's examples go two deep
    # (``account_relations.account``); one more leaves room without letting a path through a
    # to-many relation and back (``steps.pipeline.steps...``) multiply the answer per level.
    max_expand_depth: int = 3
    # Paths in one ``expand`` or ``load-only`` list (query parameter or webhook option).
    max_shape_entries: int = 20
    # Records one answer may show, expanded ones included and counted each time they appear
    # (a page of 100 with a few expansions each fits); also the ceiling of one webhook body.
    max_rendered_records: int = 5000
    # Records of one expanded to-many list in a webhook element (the oldest first): a body
    # cannot be refused after the fact, so its lists are capped and its size known up front.
    webhook_list_records: int = 20
    # A webhook's ``options`` as JSON, in bytes.
    max_options_bytes: int = 16 * 1024
    # Fields one filter names; values one field is compared with; characters of one value.
    max_filter_fields: int = 10
    max_filter_values: int = 100
    max_filter_value_length: int = 1000
    # Keys of one ``order-by``: a cursor over n keys compares in n * (n + 1) / 2 terms.
    max_order_keys: int = 10
    # Substring values (``contains``, ``icontains``) of one webhook, over all its filters: each
    # one is a scan of the record's text on every event, on the process's event loop.
    max_webhook_search_values: int = 20
    # The same over all the webhooks of a space: what one event of the space can cost. A scan
    # of a 100,000-character text takes up to ~1 ms when the text is made to be slow for it.
    max_space_search_values: int = 50
    max_webhooks_per_space: int = 100
    # Items of one batch-modify, batch-delete or batch-restore request (one transaction).
    max_batch_items: int = 1000
    # Change feed long-polls of one space waiting at once, per API process.
    max_waiting_polls_per_space: int = 100


_current: Limits | None = None


def current() -> Limits:
    """The limits of this process: those given to :func:`use`, else the environment's."""
    global _current
    if _current is None:
        _current = Limits()
    return _current


def use(limits: Limits) -> None:
    """Make ``limits`` the process's (the API does so with its settings when it starts)."""
    global _current
    _current = limits
