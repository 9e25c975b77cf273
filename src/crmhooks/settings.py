"""Settings read from the environment (``CRMHOOKS_*``) and the command line."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from crmhooks.limits import Limits
from crmhooks.store.engine import DEFAULT_URL


class Settings(Limits):
    """Every setting; the bounds of one request or webhook come from :class:`Limits`."""

    model_config = SettingsConfigDict(env_prefix="CRMHOOKS_", extra="ignore")

    database_url: str = DEFAULT_URL
    # Scheme and host that record URIs start with; by default the request's own.
    public_url: str | None = None
    max_body_bytes: int = 1024 * 1024
    # At least the expected concurrent requests: below that, PostgreSQL connections churn.
    db_pool_size: int = 20
    log_level: str = "info"
    log_json: bool = False
    # Delivery (contract sections 8, 9).
    delivery: bool = True  # run the dispatcher in this process
    allowed_targets: str = ""  # CIDRs webhooks may reach although private, e.g. 127.0.0.0/8
    retry_schedule: str = ""  # seconds between attempts, comma-separated; empty: the default
    max_in_flight: int = 256
    max_in_flight_per_webhook: int = 16
    connect_timeout: float = 5.0
    request_timeout: float = 15.0
    disable_after_seconds: float = 5 * 86400  # failing continuously this long: disabled
    retention_seconds: float = 30 * 86400  # delivered requests and routed events older: pruned
    prune_every_seconds: float = 600.0
    lease_seconds: float = 60.0  # a claimed request is taken again if not done by then
    # Dashboard (docs/dashboard.md): the secret that signs sessions; empty, one per process
    # (a restart signs everyone out; several API processes need the same one).
    ui_secret: str = ""
    ui_session_hours: float = 12.0
