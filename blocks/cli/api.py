"""`blocks api`: the HTTP API process; it imports the API's side of Blocks only."""

from __future__ import annotations

import asyncio

import typer
import uvicorn
from rich.console import Console

from blocks.api.app import check_master_keys_before_serving, create_app
from blocks.infra.crypto.field_crypto import MasterKeyError
from blocks.infra.malloc import limit_malloc_arenas
from blocks.infra.settings import get_settings

app = typer.Typer()


@app.command()
def api() -> None:
    """Serve the HTTP API."""
    limit_malloc_arenas()  # before uvicorn and the Temporal client start their threads
    settings = get_settings()
    try:
        asyncio.run(check_master_keys_before_serving(settings))
    except MasterKeyError as err:
        # On stderr, whole: a supervisor or CI log shows the reason on one line.
        Console(stderr=True, soft_wrap=True).print(str(err), style="red", markup=False)
        raise typer.Exit(2) from None
    uvicorn.run(
        create_app(settings),
        host=settings.api_host,
        port=settings.api_port,
        log_level="warning",
        # The app decides whose X-Forwarded-For to believe (BLOCKS_TRUSTED_PROXIES).
        proxy_headers=False,
        # The agents' relay (`/v1/agents/connect`) is a WebSocket.
        ws="websockets",
    )
