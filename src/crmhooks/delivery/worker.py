"""``crmhooks worker``: the dispatcher without the API, until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import signal

import structlog

from crmhooks.delivery.dispatcher import build_dispatcher
from crmhooks.settings import Settings
from crmhooks.store.engine import open_database

log = structlog.get_logger("crmhooks.worker")


async def run_worker(settings: Settings) -> None:
    db = open_database(settings.database_url, pool_size=settings.db_pool_size)
    dispatcher = build_dispatcher(db, settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await dispatcher.start()
    log.info("worker started")
    try:
        await stop.wait()
    finally:
        await dispatcher.stop()
        await db.dispose()
        trips = db.round_trips
        log.info(
            "worker stopped",
            db_statements=trips.statements,
            db_transactions=trips.transactions,
            db_round_trips=trips.total,
        )
