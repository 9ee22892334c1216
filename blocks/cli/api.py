"""`blocks api`: the HTTP API process; it imports the API's side of Blocks only."""

from __future__ import annotations

import typer
import uvicorn

from blocks.api.app import create_app
from blocks.infra.malloc import limit_malloc_arenas
from blocks.infra.settings import get_settings

app = typer.Typer()


@app.command()
def api() -> None:
    """Serve the HTTP API."""
    limit_malloc_arenas()  # before uvicorn and the Temporal client start their threads
    settings = get_settings()
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
