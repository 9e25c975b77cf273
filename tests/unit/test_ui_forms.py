"""The dashboard's form handling and chart, as pure functions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from crmhooks.errors import FIELD_VALUE, ParameterInvalid, ValidationFailed, field_error
from crmhooks.hooks.names import EVENT_NAMES
from crmhooks.ui import chart
from crmhooks.ui.forms import (
    WebhookForm,
    errors_by_field,
    event_groups,
    form_of_record,
    log_params,
    parse_form,
    read_webhook_form,
    webhook_body,
)

FORM = "application/x-www-form-urlencoded"


def test_an_urlencoded_body_is_read_and_anything_else_is_no_form() -> None:
    body = b"url=http%3A%2F%2Fx&events=Account.Create&events=Contact.*&options="
    assert parse_form(body, FORM + "; charset=utf-8") == {
        "url": ["http://x"],
        "events": ["Account.Create", "Contact.*"],
        "options": [""],
    }
    assert parse_form(b'{"csrf_token": "x"}', "application/json") == {}
    assert parse_form(body, None) == {}
    with pytest.raises(ParameterInvalid):
        parse_form(b"a=\xff\xfe", FORM)


def test_event_groups_offer_every_event_name_once_grouped_by_entity() -> None:
    groups = event_groups()
    names = [n for _, ns in groups for n in ns]
    assert sorted(names) == sorted(EVENT_NAMES)
    assert groups[0] == ("All", ["*"])
    account = dict(groups)["Account"]
    assert account[0] == "Account.*"
    assert "Account.Create" in account


def test_a_webhook_form_becomes_the_api_body() -> None:
    form = read_webhook_form(
        {
            "url": [" http://h/x "],
            "events": ["Account.Create"],
            "insecure_ssl": ["on"],
            "options": ['{"chunk_size": 5}'],
            "signature_scheme": ["pipeliner"],
        }
    )
    assert webhook_body(form, creating=True) == {
        "url": "http://h/x",
        "events": ["Account.Create"],
        "insecure_ssl": True,
        "options": {"chunk_size": 5},
        "signature_scheme": "pipeliner",
    }


def test_on_edit_an_empty_secret_is_kept_and_an_empty_owner_is_cleared() -> None:
    body = webhook_body(WebhookForm(url="http://h", events=["*"]), creating=False)
    assert "signature" not in body
    assert body["client_id"] is None


def test_options_that_are_not_a_json_object_are_refused_at_the_options_field() -> None:
    for text, said in (("{not json", "not valid JSON"), ("[1, 2]", "expected a JSON object")):
        with pytest.raises(ValidationFailed) as caught:
            webhook_body(WebhookForm(options=text), creating=True)
        shown = errors_by_field(caught.value)
        assert list(shown) == ["options"]
        assert said in shown["options"][0]


def test_server_field_errors_are_shown_at_their_top_field_with_their_path() -> None:
    exc = ValidationFailed(
        [
            field_error("options.chunk_size", FIELD_VALUE, "500 is not from 1 to 100"),
            field_error("events", FIELD_VALUE, "unknown event 'Nope.Create'"),
        ]
    )
    assert errors_by_field(exc) == {
        "options": ["options.chunk_size: 500 is not from 1 to 100"],
        "events": ["unknown event 'Nope.Create'"],
    }


def test_a_stored_webhook_fills_the_edit_form_without_its_secret() -> None:
    form = form_of_record(
        {"url": "http://h", "events": ["*"], "options": {"chunk_size": 3}, "signature": "s3cret"}
    )
    assert form.signature == ""
    assert '"chunk_size": 3' in form.options


def test_log_filters_drop_empty_values_and_refuse_an_unknown_status() -> None:
    assert log_params({"status": "failed", "since": "", "until": " 2026-01-01T10:00 "}) == {
        "status": "failed",
        "until": "2026-01-01T10:00",
    }
    with pytest.raises(ParameterInvalid, match="status"):
        log_params({"status": "lost"})


def test_the_chart_has_a_bar_per_minute_of_the_last_hour_stacked_by_outcome() -> None:
    now = datetime(2026, 11, 27, 10, 30, 15, tzinfo=UTC)
    this_minute = chart.minute_key(now)
    earlier = chart.minute_key(now - timedelta(minutes=10))
    too_old = chart.minute_key(now - timedelta(minutes=60))
    built = chart.build(
        [
            (this_minute, "delivered", 3),
            (this_minute, "failed", 1),
            (earlier, "pending", 2),
            (too_old, "delivered", 99),
        ],
        now,
    )
    assert len(built.bars) == chart.MINUTES
    assert built.totals == {"delivered": 3, "failed": 1, "pending": 2}
    assert built.peak == 4
    last = built.bars[-1]
    assert last.minute == "10:30"
    assert [(s.outcome, s.count) for s in last.segments] == [("delivered", 3), ("failed", 1)]
    assert sum(s.height for s in last.segments) <= built.plot_height
    assert "3 delivered" in last.title
    assert "1 failed" in built.summary


def test_an_empty_chart_has_no_segments() -> None:
    built = chart.build([], datetime(2026, 1, 1, tzinfo=UTC))
    assert built.peak == 0
    assert all(not b.segments for b in built.bars)
