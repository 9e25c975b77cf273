"""The ``Timezone`` header: which zones are accepted, and date-times read and written in them."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from crmhooks.errors import ParameterInvalid
from crmhooks.query.params import request_timezone
from crmhooks.schema.values import in_zone, parse_datetime

CHICAGO = ZoneInfo("America/Chicago")


def test_no_header_means_utc_without_a_zone_object() -> None:
    assert request_timezone(None) is None


@pytest.mark.parametrize("name", ["America/Chicago", "Europe/Ljubljana", "UTC", "Asia/Kolkata"])
def test_iana_names_are_zones(name: str) -> None:
    assert request_timezone(name) == ZoneInfo(name)


@pytest.mark.parametrize("name", ["", "Mars/Base", "../etc/passwd", "/etc/localtime", "a" * 65])
def test_anything_else_is_a_400_naming_the_header(name: str) -> None:
    with pytest.raises(ParameterInvalid, match="Timezone"):
        request_timezone(name)


def test_written_in_the_zone_same_instant_same_format() -> None:
    utc = "2019-02-01 07:41:49.529970+00:00"
    assert in_zone(utc, CHICAGO) == "2019-02-01 01:41:49.529970-06:00"
    assert in_zone("9999-12-31 23:00:00.000000+00:00", ZoneInfo("Asia/Tokyo")).endswith("+00:00")


def test_read_in_the_zone_only_without_an_offset() -> None:
    assert parse_datetime("2019-02-01 01:41:49", CHICAGO) == datetime(
        2019, 2, 1, 7, 41, 49, tzinfo=UTC
    )
    assert parse_datetime("2019-02-01T01:41:49Z", CHICAGO) == datetime(
        2019, 2, 1, 1, 41, 49, tzinfo=UTC
    )
    assert parse_datetime("2026-07-01", CHICAGO) == datetime(2026, 7, 1, 5, tzinfo=UTC)
    assert parse_datetime("2026-07-01") == datetime(2026, 7, 1, tzinfo=UTC)
