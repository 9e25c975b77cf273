"""A rolling upgrade on the real PostgreSQL: the previous release's processes keep working while
the current release's processes start beside them and migrate, then are replaced one at a time.

The previous release is this repository's commit before the newest migration was added, taken
from git; the test is skipped where there is no such history (a shallow clone, an archive) or
the newest migration does not only add (a release that needs every process stopped first).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tarfile
import time
from collections.abc import Iterator
from contextlib import ExitStack
from io import BytesIO
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from crmhooks.store.engine import sync_url
from crmhooks.store.migrate import MIGRATIONS
from tests.support.cluster import Cluster, assert_record_order, batch, register, wait_all
from tests.support.databases import PG_URL, fresh_database
from tests.support.servers import ROOT, spawn_serve, stop_server, wait_until
from tests.support.stack import SERVER_ENV, start_receiver

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not PG_URL, reason="CRMHOOKS_TEST_POSTGRES_URL is not set"),
]

N = 100  # accounts per step


def newest_migration() -> Path:
    return max((MIGRATIONS / "versions").glob("[0-9]*.py"))


def adds_only(migration: Path) -> bool:
    """What the migration declares (every one does: tests/integration/test_migrations.py)."""
    found = re.search(r"^adds_only = (True|False)\b", migration.read_text(), re.M)
    return found is not None and found[1] == "True"


def previous_release(into: Path) -> Path | None:
    """The source of the commit before the newest migration was added, or None without git
    history that holds it."""
    if shutil.which("git") is None:
        return None
    newest = newest_migration().relative_to(ROOT)
    added = subprocess.run(
        ["git", "log", "--diff-filter=A", "--format=%H", "--", str(newest)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if added.returncode != 0 or not added.stdout.split():
        return None
    archive = subprocess.run(
        ["git", "archive", "--format=tar", f"{added.stdout.split()[-1]}^", "src"],
        cwd=ROOT,
        capture_output=True,
    )
    if archive.returncode != 0:
        return None
    with tarfile.open(fileobj=BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def revision(db_url: str) -> str:
    engine = create_engine(sync_url(db_url))
    try:
        with engine.connect() as conn:
            return str(conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one())
    finally:
        engine.dispose()


@pytest.fixture
def old_source(tmp_path: Path) -> Path:
    migration = newest_migration()
    if not adds_only(migration):
        pytest.skip(f"{migration.name} does not only add: upgrades stop every process first")
    source = previous_release(tmp_path / "previous")
    if source is None:
        pytest.skip("no git history holding the release before the newest migration")
    return source


@pytest.fixture
def mixed(tmp_path: Path, old_source: Path) -> Iterator[Cluster]:
    """One API process and one worker of the previous release, on a new database."""
    with ExitStack() as exits:
        db_url = exits.enter_context(fresh_database("postgresql", tmp_path))
        receiver = start_receiver(tmp_path)
        exits.callback(receiver.stop)
        env = {
            **os.environ,
            **SERVER_ENV,
            "CRMHOOKS_DATABASE_URL": db_url,
            "CRMHOOKS_LOG_JSON": "false",
            "PYTHONPATH": str(old_source),  # ahead of the installed (current) release
        }
        api, _ = spawn_serve(["--no-delivery"], env)
        c = Cluster([api], [], receiver, (api.api_key, api.api_secret), env, tmp_path)

        def stop_apis() -> None:  # those running at the end
            for server in c.apis:
                stop_server(server)

        exits.callback(stop_apis)
        exits.callback(c.stop_workers)
        c.start_worker()
        yield c


def test_processes_are_replaced_one_at_a_time_across_an_additive_migration(
    mixed: Cluster,
) -> None:
    c = mixed
    old_head = revision(c.env["CRMHOOKS_DATABASE_URL"])
    register(c, "/all", ["Account.*"], 1)
    ids = batch(c, 0, [{"name": f"Before {i}"} for i in range(N)])
    wait_all(c, {"/all": N}, timeout=60)

    # A worker of the current release starts beside them and migrates the database.
    current = {k: v for k, v in c.env.items() if k != "PYTHONPATH"}
    if "PYTHONPATH" in os.environ:  # where the current release is found when not installed
        current["PYTHONPATH"] = os.environ["PYTHONPATH"]
    c.env = current
    c.start_worker()
    new_head = newest_migration().name.split("_", 1)[0]
    wait_until(lambda: revision(current["CRMHOOKS_DATABASE_URL"]) == new_head, 30, "migrated")
    assert old_head != new_head
    batch(c, 0, [{"id": i, "city": "Mixed"} for i in ids])  # through the old API process
    wait_all(c, {"/all": 2 * N}, timeout=60)

    # The old worker goes; the new one routes. A webhook registered through the old API
    # process (which does not know the newest migration) is still seen.
    old_worker = c.workers[0]
    old_worker.send_signal(signal.SIGTERM)
    assert old_worker.wait(15) == 0
    register(c, "/late", ["Account.*"], 1)
    time.sleep(1.5)
    more = batch(c, 0, [{"name": f"During {i}"} for i in range(N)])
    wait_all(c, {"/all": 3 * N, "/late": N}, timeout=60)

    # An API process of the current release replaces the old one.
    new_api, _ = spawn_serve(["--no-delivery"], current)
    c.apis.append(new_api)
    stop_server(c.apis[0])
    c.apis = c.apis[1:]
    batch(c, 0, [{"id": i, "city": "After"} for i in ids + more])
    got = wait_all(c, {"/all": 5 * N, "/late": 3 * N}, timeout=60)

    for path, n in {"/all": 5 * N, "/late": 3 * N}.items():
        carried = got[path].element_ids()
        assert len(carried) == n
        assert all(len(msgs) == 1 for msgs in carried.values()), f"{path}: an event sent twice"
        sent = [msg for msg, _ in got[path].requests]
        assert len(sent) == len(set(sent)), f"{path}: a request sent twice"
    assert_record_order(got["/all"].requests)
    assert c.workers[1].poll() is None
