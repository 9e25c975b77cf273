"""The alembic migrations build exactly the schema that ``crmhooks.store.tables`` describes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text

from crmhooks.store.engine import sync_url
from crmhooks.store.migrate import alembic_config, upgrade
from crmhooks.store.tables import metadata


def differences(url: str) -> list[Any]:
    """What autogenerate would still have to do to reach ``metadata`` from this database."""
    engine = create_engine(sync_url(url))
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"compare_type": True, "compare_server_default": True}
            )
            diff: list[Any] = compare_metadata(context, metadata)
            tables = set(inspect(conn).get_table_names())
    finally:
        engine.dispose()
    assert tables == {*metadata.tables, "alembic_version"}
    return diff


def test_migrations_have_one_head() -> None:
    scripts = ScriptDirectory.from_config(alembic_config("sqlite:///unused.db"))
    assert len(scripts.get_heads()) == 1


def test_migrations_on_an_empty_sqlite_file_give_exactly_the_tables_module(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    upgrade(url)
    assert differences(url) == []
    # Running them again on an up-to-date database changes nothing.
    upgrade(url)
    assert differences(url) == []


def test_migrations_on_an_empty_postgresql_schema_give_exactly_the_tables_module(
    empty_pg_url: str,
) -> None:
    upgrade(empty_pg_url)
    assert differences(empty_pg_url) == []


def _revisions() -> list[str]:
    scripts = ScriptDirectory.from_config(alembic_config("sqlite:///unused.db"))
    return [s.revision for s in reversed(list(scripts.walk_revisions()))]


@pytest.mark.slow
def test_an_upgrade_from_every_earlier_revision_gives_exactly_the_tables_module(
    empty_url: str,
) -> None:
    # One run of alembic per revision, each continuing from where the one before stopped: every
    # revision is a point an upgrade starts from. (Each start as a chain of its own ran the
    # same migrations on the same empty tables, 17 times over.)
    for revision in _revisions():
        upgrade(empty_url, revision)
    assert differences(empty_url) == []


def test_request_bodies_move_to_their_own_table_with_their_data(empty_url: str) -> None:
    upgrade(empty_url, "0005")
    engine = create_engine(sync_url(empty_url))
    now = "2026-11-27 12:00:00.000000"
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO deliveries (id, webhook_id, space_id, status, body, event_ids,"
                    " event_count, first_seq, attempts, next_attempt_at, created)"
                    " VALUES ('d1', 'w1', 'default', 'pending', '[{\"id\": 1}]', '[\"e1\"]',"
                    " 1, 1, 0, :now, :now)"
                ),
                {"now": now},
            )
        upgrade(empty_url)
        with engine.connect() as conn:
            moved = conn.execute(text("SELECT delivery_id, body FROM delivery_bodies")).all()
            kept = conn.execute(text("SELECT id, status FROM deliveries")).all()
    finally:
        engine.dispose()
    assert [tuple(r) for r in moved] == [("d1", '[{"id": 1}]')]
    assert [tuple(r) for r in kept] == [("d1", "pending")]


def test_todays_links_become_relation_rows(empty_url: str) -> None:
    """0012: every single link of an upgraded database is a relation row, marked as before."""
    upgrade(empty_url, "0008")
    engine = create_engine(sync_url(empty_url))
    system = "space_id, created, modified, is_deleted, revision"
    values = ":space, :now, :now, :no, 1"
    params = {"space": "default", "now": "2026-11-27 12:00:00.000000", "no": False}
    rows = [
        ("contacts", "id, primary_account_id", "'c1', 'a1'"),
        (
            "lead_opptys",
            "id, kind, primary_account_id, primary_contact_id",
            "'l1', 'Lead', 'a1', 'c1'",
        ),
        ("tasks", "id, account_id, lead_oppty_id", "'t1', 'a1', 'l1'"),
        ("appointments", "id, contact_id", "'p1', 'c1'"),
        ("cloud_objects", "id, task_id", "'d1', 't1'"),
        ("cloud_objects", "id, email_id", "'d2', 'e1'"),
    ]
    try:
        with engine.begin() as conn:
            for table, cols, vals in rows:
                conn.execute(
                    text(f"INSERT INTO {table} ({cols}, {system}) VALUES ({vals}, {values})"),
                    params,
                )
        upgrade(empty_url)
        with engine.connect() as conn:

            def read(sql: str) -> set[tuple[object, ...]]:
                return {tuple(r) for r in conn.execute(text(sql))}

            contact_rows = read(
                "SELECT contact_id, account_id, is_primary FROM contact_account_relations"
            )
            lead_accounts = read(
                "SELECT lead_oppty_id, account_id, is_primary FROM lead_oppty_account_relations"
            )
            lead_contacts = read(
                "SELECT lead_oppty_id, contact_id, is_primary FROM lead_oppty_contact_relations"
            )
            activities = read(
                "SELECT activity_id, activity_type, account_id, contact_id, lead_oppty_id"
                " FROM activity_relations"
            )
            documents = read(
                "SELECT cloud_object_id, activity_id, activity_type, message_id, message_type"
                " FROM cloud_object_relations"
            )
            ids = [r[0] for r in conn.execute(text("SELECT id FROM activity_relations"))]
    finally:
        engine.dispose()
    assert contact_rows == {("c1", "a1", True)}
    assert lead_accounts == {("l1", "a1", True)}
    assert lead_contacts == {("l1", "c1", True)}
    assert activities == {
        ("t1", "Tasks", "a1", None, None),
        ("t1", "Tasks", None, None, "l1"),
        ("p1", "Appointments", None, "c1", None),
    }
    assert documents == {("d1", "t1", "Tasks", None, None), ("d2", None, None, "e1", "Emails")}
    assert len(set(ids)) == 3
    assert all(
        re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", i)
        for i in ids
    )


@pytest.mark.slow
def test_processes_starting_together_migrate_one_after_the_other(empty_pg_url: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: upgrade(empty_pg_url), range(4)))
    assert results == [None] * 4
    assert differences(empty_pg_url) == []


def test_every_migration_says_whether_it_only_adds_as_the_deployment_guide_does() -> None:
    script = ScriptDirectory.from_config(alembic_config("sqlite:///unused.db"))
    declared = {}
    for rev in script.walk_revisions():
        assert isinstance(getattr(rev.module, "adds_only", None), bool), rev.revision
        declared[rev.revision] = rev.module.adds_only
    guide = (Path(__file__).parents[2] / "docs" / "deploy.md").read_text()
    listed = {
        m[1]: m[2] == "yes" for m in re.finditer(r"^\| (\d{4}) [^|]*\| (yes|no)\b", guide, re.M)
    }
    assert listed == declared


def test_spaces_made_before_0011_get_the_records_a_new_space_gets(empty_url: str) -> None:
    upgrade(empty_url, "0008")
    engine = create_engine(sync_url(empty_url))
    tables = ("sales_units", "task_types", "appointment_types", "account_types")
    tables += ("contact_types", "clients", "currencies")
    try:
        with engine.begin() as conn:
            for space in ("acme", "beta"):
                conn.execute(
                    text("INSERT INTO spaces (id, created) VALUES (:id, :now)"),
                    {"id": space, "now": "2026-11-27 12:00:00.000000"},
                )
        upgrade(empty_url)
        with engine.connect() as conn:
            counts = {
                t: conn.execute(
                    text(f"SELECT space_id, count(*) FROM {t} GROUP BY space_id ORDER BY 1")
                ).all()
                for t in tables
            }
            base = conn.execute(
                text("SELECT code, is_base, is_deleted, revision FROM currencies")
            ).all()
    finally:
        engine.dispose()
    assert {t: [tuple(r) for r in rows] for t, rows in counts.items()} == {
        t: [("acme", 1), ("beta", 1)] for t in tables
    }
    assert [tuple(r) for r in base] == [("USD", True, False, 1)] * 2
