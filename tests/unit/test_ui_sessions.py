"""The dashboard's session cookies and CSRF tokens, as pure functions."""

from __future__ import annotations

import base64

import orjson

from crmhooks.ui import sessions

SECRET = b"server secret"
KEY = sessions.signing_key(SECRET, "key-1", "hash-1")
NOW = 1_800_000_000
DAY = 86_400


def test_a_cookie_issued_verifies_and_names_its_key_and_space() -> None:
    cookie = sessions.issue(KEY, "ck_abc", "acme", NOW)
    claims = sessions.verify(KEY, cookie, NOW + 10, DAY)
    assert claims is not None
    assert (claims.api_key, claims.space_id, claims.issued_at) == ("ck_abc", "acme", NOW)


def test_a_cookie_expires_after_its_max_age_and_is_not_valid_before_it_was_issued() -> None:
    cookie = sessions.issue(KEY, "ck_abc", "acme", NOW)
    assert sessions.verify(KEY, cookie, NOW + DAY, DAY) is not None
    assert sessions.verify(KEY, cookie, NOW + DAY + 1, DAY) is None
    assert sessions.verify(KEY, cookie, NOW - 5, DAY) is None


def test_a_cookie_signed_for_another_key_or_server_secret_is_refused() -> None:
    cookie = sessions.issue(KEY, "ck_abc", "acme", NOW)
    other_key = sessions.signing_key(SECRET, "key-2", "hash-2")
    other_server = sessions.signing_key(b"another secret", "key-1", "hash-1")
    replaced_secret = sessions.signing_key(SECRET, "key-1", "hash-of-a-new-secret")
    for key in (other_key, other_server, replaced_secret):
        assert sessions.verify(key, cookie, NOW, DAY) is None


def test_a_cookie_whose_payload_was_changed_is_refused() -> None:
    cookie = sessions.issue(KEY, "ck_abc", "acme", NOW)
    _, mac = cookie.split(".")
    forged = {"k": "ck_abc", "s": "other-space", "t": NOW, "n": "x"}
    payload = base64.urlsafe_b64encode(orjson.dumps(forged)).rstrip(b"=").decode()
    assert sessions.verify(KEY, f"{payload}.{mac}", NOW, DAY) is None


def test_malformed_cookies_are_refused_without_raising() -> None:
    for junk in (None, "", ".", "abc", "a.b.c", "!!!.###", "e30.x", "W10.x", "x" * 5000):
        assert sessions.peek(junk) is None
        assert sessions.verify(KEY, junk, NOW, DAY) is None
    not_int = base64.urlsafe_b64encode(orjson.dumps({"k": "a", "s": "b", "t": "1", "n": "c"}))
    assert sessions.peek(not_int.decode().rstrip("=") + ".mac") is None


def test_a_cookie_with_a_non_ascii_or_truncated_signature_is_refused_without_raising() -> None:
    payload, mac = sessions.issue(KEY, "ck_abc", "acme", NOW).split(".")
    for junk in (f"{payload}.éé", f"{payload}.{mac[:-1]}é", f"é{payload}.{mac}", f"{payload}."):
        assert sessions.peek(junk) is None or junk.endswith(".")
        assert sessions.verify(KEY, junk, NOW, DAY) is None


def test_a_cookie_of_an_earlier_session_epoch_is_refused() -> None:
    cookie = sessions.issue(sessions.signing_key(SECRET, "key-1", "hash-1", 4), "k", "s", NOW)
    assert sessions.verify(sessions.signing_key(SECRET, "key-1", "hash-1", 4), cookie, NOW, DAY)
    assert not sessions.verify(sessions.signing_key(SECRET, "key-1", "hash-1", 5), cookie, NOW, DAY)


def test_the_csrf_token_is_stable_within_a_session_and_differs_between_sessions() -> None:
    one = sessions.peek(sessions.issue(KEY, "ck_abc", "acme", NOW))
    two = sessions.peek(sessions.issue(KEY, "ck_abc", "acme", NOW))
    assert one is not None
    assert two is not None
    assert sessions.csrf_token(KEY, one) == sessions.csrf_token(KEY, one)
    assert sessions.csrf_token(KEY, one) != sessions.csrf_token(KEY, two)
    other_key = sessions.signing_key(SECRET, "key-2", "hash-2")
    assert sessions.csrf_token(KEY, one) != sessions.csrf_token(other_key, one)


def test_tokens_match_only_when_equal_and_never_when_empty() -> None:
    assert sessions.tokens_match("abc", "abc")
    assert not sessions.tokens_match("abc", "abd")
    assert not sessions.tokens_match("abc", None)
    assert not sessions.tokens_match("", "")
    assert not sessions.tokens_match(None, None)


def test_signin_tokens_are_random() -> None:
    assert len({sessions.new_signin_token() for _ in range(50)}) == 50
