"""The ``crmhooks`` command: serve, spaces create."""

from __future__ import annotations

import asyncio
import signal
from typing import Annotated

import orjson
import typer
from rich.console import Console

from crmhooks.errors import ConfigError
from crmhooks.logs import configure
from crmhooks.settings import Settings
from crmhooks.store.engine import open_database
from crmhooks.store.keys import IssuedKey, SpaceExists, any_space, create_space
from crmhooks.store.migrate import upgrade

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
spaces_app = typer.Typer(no_args_is_help=True, help="Manage spaces (tenants) and their keys.")
app.add_typer(spaces_app, name="spaces")
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
    import uvicorn

    from crmhooks.api import create_app

    settings = _settings(database)
    if not settings.public_url:
        settings = settings.model_copy(update={"public_url": f"http://{host}:{port}"})
    if no_delivery:
        settings = settings.model_copy(update={"delivery": False})
    configure(settings.log_level, json=settings.log_json)
    try:
        upgrade(settings.database_url)
        issued = asyncio.run(_create_space(settings, "default", only_if_empty=True))
    except ConfigError as e:
        err.print(f"error: {e}")
        raise typer.Exit(2) from None
    if issued is not None:
        console.print("Created space 'default'.")
        _print_key(issued)
    console.print(f"crmhooks listening on http://{host}:{port}  (API docs: /docs)")
    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again with the handler
    # it found: a handler that does nothing lets `serve` end with status 0 after a clean stop.
    signal.signal(signal.SIGTERM, lambda *_: None)
    uvicorn.run(
        create_app(settings, migrate=False),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        loop="uvloop",
        http="httptools",
    )


@app.command()
def worker(database: DatabaseOption = None) -> None:
    """Deliver webhooks only (beside `serve`, typically `serve --no-delivery`)."""
    from crmhooks.delivery.worker import run_worker

    settings = _settings(database)
    configure(settings.log_level, json=settings.log_json)
    try:
        upgrade(settings.database_url)
    except ConfigError as e:
        err.print(f"error: {e}")
        raise typer.Exit(2) from None
    console.print("crmhooks worker delivering webhooks (stop with Ctrl-C or SIGTERM)")
    asyncio.run(run_worker(settings))


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


def main() -> None:
    app()
