"""The ``crmhooks`` command: serve, worker, listen, events, spaces create, keys (create, list,
revoke, rotate)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, TypeVar

import orjson
import typer
from rich.console import Console
from sqlalchemy.ext.asyncio import AsyncConnection

from crmhooks.errors import ApiError, ConfigError
from crmhooks.logs import configure
from crmhooks.settings import Settings
from crmhooks.store.engine import open_database
from crmhooks.store.keys import (
    IssuedKey,
    KeyListing,
    SpaceExists,
    UnknownKey,
    UnknownSpace,
    any_space,
    create_space,
    issue_key,
    list_keys,
    revoke_key,
    rotate_key,
    space_exists,
)
from crmhooks.store.migrate import upgrade

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
spaces_app = typer.Typer(no_args_is_help=True, help="Manage spaces (tenants) and their keys.")
app.add_typer(spaces_app, name="spaces")
keys_app = typer.Typer(
    no_args_is_help=True,
    help="Manage a space's API keys: create, list, revoke, rotate. A revoked key gets 401 in "
    "every running process within a second, and its dashboard sessions end.",
)
app.add_typer(keys_app, name="keys")
console = Console()
err = Console(stderr=True)

DatabaseOption = Annotated[
    str | None,
    typer.Option(
        "--database", envvar="CRMHOOKS_DATABASE_URL", help="sqlite:///file.db or postgresql://..."
    ),
]


def _settings(database: str | None) -> Settings:
    settings = Settings()
    if database:
        settings = settings.model_copy(update={"database_url": database})
    return settings


async def _create_space(
    settings: Settings, space_id: str, *, only_if_empty: bool
) -> IssuedKey | None:
    db = open_database(settings.database_url)
    try:
        async with db.write() as conn:
            if only_if_empty and await any_space(conn):
                return None
            return await create_space(conn, space_id, base_currency=settings.base_currency)
    finally:
        await db.dispose()


T = TypeVar("T")


def _in_transaction(database: str | None, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
    """Migrate, then run ``work`` in one write transaction; a bad input ends the command with
    its message and status 1."""
    url = _settings(database).database_url

    async def run() -> T:
        db = open_database(url)
        try:
            async with db.write() as conn:
                return await work(conn)
        finally:
            await db.dispose()

    try:
        upgrade(url)
        return asyncio.run(run())
    except (ConfigError, UnknownSpace, UnknownKey, ValueError) as e:
        err.print(f"error: {e}")
        raise typer.Exit(1) from None


def _print_key(issued: IssuedKey) -> None:
    console.print(f"space      {issued.space_id}")
    console.print(f"api key    {issued.api_key}")
    console.print(f"api secret {issued.api_secret}")
    console.print(f"client id  {issued.client_id}  (the API user: write it as owner_id)")
    console.print("The secret is shown only now; it is stored as a hash.", style="dim")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    database: DatabaseOption = None,
    no_delivery: Annotated[
        bool, typer.Option("--no-delivery", help="Serve the API only; `worker`s deliver.")
    ] = False,
) -> None:
    """Run the API (on an empty database, create space `default` and print its key once)."""
    settings = _settings(database)
    if not settings.public_url:
        settings = settings.model_copy(update={"public_url": f"http://{host}:{port}"})
    if no_delivery:
        settings = settings.model_copy(update={"delivery": False})
    configure(settings.log_level, json=settings.log_json)
    child = None
    if settings.delivery and settings.delivery_process:
        from crmhooks.worker import DeliveryProcess

        # First, while nothing runs that a copy could break: the delivery process, forked
        # with the delivery side imported, opens the database only once the app has started
        # (delivery.wakeups.wait_ready).
        child = DeliveryProcess(settings)
        child.spawn(fork=True)

    import uvicorn

    from crmhooks.app import create_app

    try:
        upgrade(settings.database_url)
        issued = asyncio.run(_create_space(settings, "default", only_if_empty=True))
    except ConfigError as e:
        err.print(f"error: {e}")
        raise typer.Exit(2) from None  # the delivery process ends with this one (its pipe)
    if issued is not None:
        console.print("Created space 'default'.")
        _print_key(issued)
    console.print(f"crmhooks listening on http://{host}:{port}  (API docs: /docs)")
    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again with the handler
    # it found: a handler that does nothing lets `serve` end with status 0 after a clean stop.
    signal.signal(signal.SIGTERM, lambda *_: None)
    uvicorn.run(
        create_app(settings, migrate=False, delivery_process=child),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        loop="uvloop",
        http="httptools",
    )


@app.command()
def worker(
    database: DatabaseOption = None,
    wake_fd: Annotated[
        int | None,
        typer.Option(
            "--wake-fd",
            hidden=True,
            help="serve's delivery process: the pipe serve wakes it through (and whose end "
            "of file means serve is gone).",
        ),
    ] = None,
) -> None:
    """Deliver webhooks only (beside `serve`, typically `serve --no-delivery`)."""
    from crmhooks.worker import delivery_main, run_worker

    settings = _settings(database)
    configure(settings.log_level, json=settings.log_json)
    if wake_fd is not None:  # started by serve (again, after a crash), which migrates
        delivery_main(settings, wake_fd)
        return
    try:
        upgrade(settings.database_url)
    except ConfigError as e:
        err.print(f"error: {e}")
        raise typer.Exit(2) from None
    console.print("crmhooks worker delivering webhooks (stop with Ctrl-C or SIGTERM)")
    asyncio.run(run_worker(settings))


@app.command()
def events(
    space_id: Annotated[str, typer.Argument(help="The space's id.")],
    after: Annotated[
        str | None, typer.Option(help="A cursor: the events after it (else from the oldest).")
    ] = None,
    event: Annotated[
        str | None,
        typer.Option(help="Event names, as a webhook lists them: Account.Update,Account.*,*"),
    ] = None,
    entity_id: Annotated[str | None, typer.Option(help="The events of one record.")] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep waiting for new events (Ctrl-C ends).")
    ] = False,
    database: DatabaseOption = None,
) -> None:
    """Print a space's events, one line each, oldest first (the change feed, from the
    database); with --follow, go on printing new ones as they are written."""
    from crmhooks.services.feed import FeedSignals, parse_query, read_feed, shown_name

    url = _settings(database).database_url
    params = {"first": "100"}
    params |= {k: v for k, v in {"after": after, "filter[event]": event}.items() if v}
    if entity_id:
        params["filter[entity_id]"] = entity_id

    async def run() -> str:
        db = open_database(url)
        signals = FeedSignals()  # nothing wakes it here: a follow reads again every 0.2 s
        try:
            async with db.read() as conn:
                if not await space_exists(conn, space_id):
                    raise UnknownSpace(f"there is no space {space_id!r}")
            while True:
                query = parse_query(params | ({"wait": "30"} if follow else {}))
                page = await read_feed(db, signals, space_id, query, "", poll_seconds=0.2)
                for e in page.data:
                    line = f"{e['event_time']}  {e['event']:<28} {e['entity_id']}  {shown_name(e)}"
                    typer.echo(line.rstrip())
                params["after"] = page.end_cursor
                if not page.has_next_page and not follow:
                    return page.end_cursor
        finally:
            await db.dispose()

    try:
        upgrade(url)
        cursor = asyncio.run(run())
    except KeyboardInterrupt:
        raise typer.Exit(0) from None
    except (ConfigError, UnknownSpace, ApiError) as e:
        message = str(e)
        for param, option in _FEED_OPTIONS.items():  # the feed's parameters by their options
            message = message.replace(param, option)
        err.print(f"error: {message}", markup=False)
        raise typer.Exit(1) from None
    err.print(f"next: --after {cursor}", style="dim")


_FEED_OPTIONS = {
    "filter[event]": "--event",
    "filter[entity_id]": "--entity-id",
    "after:": "--after:",
}


@app.command()
def listen(
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 9000,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    signature: Annotated[
        str | None, typer.Option(help="The webhook's secret, to check each request's signature.")
    ] = None,
    status: Annotated[int, typer.Option(help="The HTTP status to answer with.")] = 200,
) -> None:
    """Receive webhook requests locally and print them (headers, JSON, signature check)."""
    from crmhooks.listen import run

    run(host, port, signature, status)


@spaces_app.command("create")
def spaces_create(
    space_id: Annotated[str, typer.Argument(help="[A-Za-z0-9_-]{1,64}")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    database: DatabaseOption = None,
) -> None:
    """Create a space and its first API key."""
    settings = _settings(database)
    try:
        upgrade(settings.database_url)
        issued = asyncio.run(_create_space(settings, space_id, only_if_empty=False))
    except (ConfigError, SpaceExists, ValueError) as e:
        err.print(f"error: {e}")
        raise typer.Exit(1) from None
    assert issued is not None
    _show_issued(issued, as_json)


def _show_issued(issued: IssuedKey, as_json: bool) -> None:
    if as_json:
        typer.echo(
            orjson.dumps(
                {
                    "space_id": issued.space_id,
                    "api_key": issued.api_key,
                    "api_secret": issued.api_secret,
                    "client_id": issued.client_id,
                }
            ).decode()
        )
    else:
        _print_key(issued)


SpaceArg = Annotated[str, typer.Argument(help="The space's id.")]
ApiKeyArg = Annotated[str, typer.Argument(help="The API key (ck_...), not its secret.")]


@keys_app.command("create")
def keys_create(
    space_id: SpaceArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    database: DatabaseOption = None,
) -> None:
    """Issue another API key for an existing space (the secret is printed once)."""

    async def work(conn: AsyncConnection) -> IssuedKey:
        if not await space_exists(conn, space_id):
            raise UnknownSpace(f"there is no space {space_id!r}")
        return await issue_key(conn, space_id)

    _show_issued(_in_transaction(database, work), as_json)


def _state(key: KeyListing, now: datetime) -> str:
    if key.revoked_at is not None and key.revoked_at <= now:
        return f"revoked {_when(key.revoked_at)}"
    if key.expires_at is not None:
        verb = "expired" if key.expires_at <= now else "expires"
        return f"{verb} {_when(key.expires_at)}"
    return "active"


def _when(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC")


@keys_app.command("list")
def keys_list(space_id: SpaceArg, database: DatabaseOption = None) -> None:
    """List a space's API keys: created, and revoked or expiry state (never secrets)."""

    async def work(conn: AsyncConnection) -> list[KeyListing]:
        return await list_keys(conn, space_id)

    now = datetime.now(UTC)
    for key in _in_transaction(database, work):
        typer.echo(f"{key.api_key}  created {_when(key.created)}  {_state(key, now)}")


@keys_app.command("revoke")
def keys_revoke(space_id: SpaceArg, api_key: ApiKeyArg, database: DatabaseOption = None) -> None:
    """Revoke a key now: 401 in every running process within a second; its sessions end."""

    async def work(conn: AsyncConnection) -> bool:
        return await revoke_key(conn, space_id, api_key)

    if _in_transaction(database, work):
        typer.echo(f"revoked {api_key}")
    else:
        typer.echo(f"{api_key} was revoked or expired already; nothing changed")


@keys_app.command("rotate")
def keys_rotate(
    space_id: SpaceArg,
    api_key: ApiKeyArg,
    grace: Annotated[
        float,
        typer.Option(help="Seconds the old key keeps working (then 401, sessions end)."),
    ] = 24 * 3600,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    database: DatabaseOption = None,
) -> None:
    """Issue a new key for the space; the old one keeps working for the grace period only."""

    async def work(conn: AsyncConnection) -> tuple[IssuedKey, datetime]:
        return await rotate_key(conn, space_id, api_key, grace)

    issued, ends = _in_transaction(database, work)
    _show_issued(issued, as_json)
    if not as_json:
        typer.echo(f"{api_key} stops working at {_when(ends)}")


def main() -> None:
    app()
