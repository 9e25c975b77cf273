"""Settings read from the environment (``CRMHOOKS_*``) and the command line."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from crmhooks.limits import Limits

DEFAULT_URL = "sqlite:///crmhooks.db"


class Settings(Limits):
    """Every setting; the bounds of one request or webhook come from :class:`Limits`."""

    model_config = SettingsConfigDict(env_prefix="CRMHOOKS_", extra="ignore")

    database_url: str = DEFAULT_URL
    # Scheme and host that record URIs start with; by default the request's own.
    public_url: str | None = None
    max_body_bytes: int = 1024 * 1024
    # At least the expected concurrent requests: below that, PostgreSQL connections churn.
    db_pool_size: int = 20
    # The base currency of each space created from now on (an ISO 4217 code).
    base_currency: str = "USD"
    log_level: str = "info"
    log_json: bool = False
    # Delivery (docs/webhooks.md#settings).
    delivery: bool = True  # deliver webhooks from `serve` (false: `serve --no-delivery`)
    # `serve` delivers from a child process of its own, started and stopped with it, so API
    # writes never queue behind delivery work on one event loop (docs/deploy.md). False: in
    # the API's own process. `create_app` alone (embedded, tests) always delivers in-process.
    delivery_process: bool = True
    allowed_targets: str = ""  # CIDRs webhooks may reach although private, e.g. 127.0.0.0/8
    # Seconds a webhook URL's name may take to resolve at registration (before the write
    # transaction opens); a name slower than that is checked by the sender when it connects.
    resolve_timeout: float = 2.0
    retry_schedule: str = ""  # seconds between attempts, comma-separated; empty: the default
    max_in_flight: int = 256
    max_in_flight_per_webhook: int = 16
    # What one space's webhooks may hold of max_in_flight, per process; unset: half of it
    # (at least 16). See docs/webhooks.md, Isolation.
    max_in_flight_per_space: int | None = None
    # Milliseconds of filter matching one space gets in each routing step; past it, the rest
    # of its events wait for later steps (docs/webhooks.md, Isolation).
    routing_budget_ms: float = 50.0
    connect_timeout: float = 5.0
    request_timeout: float = 15.0
    disable_after_seconds: float = 5 * 86400  # failing continuously this long: disabled
    retention_seconds: float = 30 * 86400  # delivered requests and routed events older: pruned
    prune_every_seconds: float = 600.0
    lease_seconds: float = 60.0  # a claimed request is taken again if not done by then
    # Authentication (docs/api.md): a key is read again from the database once its cached copy
    # is this old, so a revoked key stops working everywhere within about a second (keep < 1).
    key_cache_seconds: float = 0.5
    # Failed authentications (API and dashboard sign-in) allowed per client address and per
    # API key within the window, per process; beyond them failures get 429.
    auth_failure_limit: int = 10
    auth_failure_window_seconds: float = 60.0
    # Dashboard (docs/dashboard.md): the secret that signs sessions; empty, one per process
    # (a restart signs everyone out; several API processes need the same one).
    ui_secret: str = ""
    ui_session_hours: float = 12.0
