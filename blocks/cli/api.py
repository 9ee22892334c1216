"""`blocks api`: the HTTP API process; it imports the API's side of Blocks only."""

from __future__ import annotations

import typer
import uvicorn

from blocks.api.app import create_app
from blocks.infra.settings import get_settings

app = typer.Typer()


@app.command()
def api() -> None:
    """Serve the HTTP API."""
    settings = get_settings()
    uvicorn.run(
        create_app(settings),
        host=settings.api_host,
        port=settings.api_port,
        log_level="warning",
        # The app decides whose X-Forwarded-For to believe (BLOCKS_TRUSTED_PROXIES).
        proxy_headers=False,
    )
