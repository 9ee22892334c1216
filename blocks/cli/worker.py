"""`blocks worker`: a Temporal worker process; it imports the worker's side of Blocks only."""

from __future__ import annotations

import asyncio

import typer
from rich.console import Console

from blocks.cli import WorkflowModules
from blocks.infra.crypto.field_crypto import MasterKeyError
from blocks.infra.malloc import limit_malloc_arenas
from blocks.infra.settings import get_settings
from blocks.workers.main import run_worker
from blocks.workers.workflow_modules import WorkflowLoadError

app = typer.Typer()


@app.command()
def worker(workflows: WorkflowModules = None) -> None:
    """Run a Temporal worker for the workflows of the given modules and Blocks' own."""
    limit_malloc_arenas()  # before the Temporal runtime starts its threads
    settings = get_settings()
    if workflows:
        settings = settings.model_copy(update={"workflow_modules": workflows})
    try:
        asyncio.run(run_worker(settings))
    except (WorkflowLoadError, MasterKeyError) as err:
        # On stderr, whole: a supervisor or CI log shows the module and the cause on one line.
        Console(stderr=True, soft_wrap=True).print(str(err), style="red", markup=False)
        raise typer.Exit(2) from None
