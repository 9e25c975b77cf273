"""Prometheus metrics of this process (``GET /metrics``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS_RECORDED = Counter("crmhooks_events_recorded", "Events stored in the outbox")
REQUESTS_SENT = Counter("crmhooks_requests_sent", "Webhook requests sent, by outcome", ["outcome"])
DELIVERY_LATENCY = Histogram(
    "crmhooks_delivery_latency_seconds",
    "Time from sending a webhook request to its answer",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 15),
)
QUEUE_DEPTH = Gauge("crmhooks_queue_depth", "Webhook requests waiting to be sent")
OLDEST_PENDING = Gauge(
    "crmhooks_oldest_pending_age_seconds", "Age of the oldest webhook request waiting"
)
