"""The total of an unfiltered list on SQLite reads the table's partial index of live records,
whatever other indexes begin with ``space_id`` (without statistics SQLite may otherwise take a
relation index and visit the table for every row: docs/benchmarks.md, API speed)."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

from crmhooks.query.sql import _live_count_sqlite
from crmhooks.schema.registry import BUILTIN, CUSTOM_DISCRIMINATOR, CUSTOM_RECORD_TABLE
from crmhooks.store.records import table_of
from crmhooks.store.tables import TABLES
from tests.support.databases import migrated_sqlite


def test_every_table_counts_its_live_records_from_its_live_index(
    tmp_path: Path,
) -> None:
    # The tables that hold several kinds: their live index leads with the kind too.
    kinds = {table_of(et).name: et.discriminator[0] for et in BUILTIN.values() if et.discriminator}
    kinds[CUSTOM_RECORD_TABLE] = CUSTOM_DISCRIMINATOR
    path = migrated_sqlite(tmp_path / "plan.db")
    conn = sqlite3.connect(path)
    try:
        for name in TABLES:
            disc = kinds.get(name)
            sql = str(_live_count_sqlite(name, disc))
            params = {"space_id": "s", **({"kind": "k"} if disc else {})}
            plan = " ".join(str(r[-1]) for r in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))
            assert re.search(rf"USING (COVERING )?INDEX ix_{name}_live\b", plan), (name, plan)
    finally:
        conn.close()
