"""The composition root hands the dispatcher the settings' values, and the defaults of
``DispatchSettings`` (which the benchmarks build directly) are the settings' own."""

from __future__ import annotations

import os
from dataclasses import fields

import pytest

from crmhooks.delivery.dispatcher import DispatchSettings
from crmhooks.delivery.retry import parse_schedule
from crmhooks.settings import Settings
from crmhooks.worker import dispatch_settings


def test_the_dispatcher_gets_the_settings_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("CRMHOOKS_")]:
        monkeypatch.delenv(name)
    built = dispatch_settings(Settings())
    assert built == DispatchSettings(parse_schedule(""))
    assert {f.name for f in fields(built)} >= {"max_in_flight", "lease_seconds", "retention"}


def test_the_dispatcher_gets_what_is_set() -> None:
    settings = Settings(
        max_in_flight=40,
        max_in_flight_per_webhook=4,
        max_in_flight_per_space=30,
        lease_seconds=7.0,
        disable_after_seconds=9.0,
        retention_seconds=11.0,
        prune_every_seconds=13.0,
        retry_schedule="1,2",
    )
    built = dispatch_settings(settings)
    assert (built.max_in_flight, built.max_in_flight_per_webhook) == (40, 4)
    assert built.max_in_flight_per_space == 30
    assert (built.lease_seconds, built.disable_after, built.retention) == (7.0, 9.0, 11.0)
    assert built.prune_every == 13.0
    assert list(built.schedule) == [1.0, 2.0]
