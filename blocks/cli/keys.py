"""`blocks keys status | rotate`: the master keys, what each wraps, and re-wrapping under a new one.

Rotating the master key: put the new key first in BLOCKS_MASTER_KEYS and keep the old one after it
(`blocks payload-key --key-id k2` makes one), restart the API and workers, then run
`blocks keys rotate`. When `blocks keys status` shows the old key retirable, remove it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import typer
from rich.console import Console
from rich.table import Table

from blocks.cli.operator_db import operator_database_url
from blocks.infra.crypto.field_crypto import MasterKeyError, load_master_keys
from blocks.infra.db import create_engine
from blocks.infra.settings import get_settings
from blocks.models.keys.master_keys import check_master_keys
from blocks.models.keys.rotation import KINDS, key_status, rotate

app = typer.Typer()
keys_app = typer.Typer(help="The master keys that wrap every data key and secret.")
app.add_typer(keys_app, name="keys")
console = Console()
T = TypeVar("T")


def _with_engine(action: Callable[..., Awaitable[T]]) -> T:
    settings = get_settings()
    try:
        master = load_master_keys(settings)
    except MasterKeyError as err:
        console.print(f"[red]{err}[/red]")
        raise typer.Exit(1) from err

    async def run() -> T:
        engine = create_engine(operator_database_url(settings), pool_size=1)
        try:
            await check_master_keys(engine, master)
            return await action(engine, master)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(run())
    except MasterKeyError as err:
        console.print(f"[red]{err}[/red]")
        raise typer.Exit(1) from err


@keys_app.command("status")
def status() -> None:
    """Each master key id: configured or not, active, and what it still wraps."""
    usages = _with_engine(key_status)
    table = Table("master key", "state", *KINDS, "retirable")
    for usage in usages:
        state = "active" if usage.active else "configured" if usage.configured else "missing"
        if usage.retired:
            state += ", retired"
        table.add_row(
            usage.key_id,
            state,
            *(str(usage.wraps[kind]) for kind in KINDS),
            "yes" if usage.retirable else "no",
        )
    console.print(table)


@keys_app.command("rotate")
def rotate_keys() -> None:
    """Wrap every data key and secret again under the active (first) master key."""
    report = _with_engine(rotate)
    counts = ", ".join(f"{report.rewrapped[kind]} {kind}" for kind in KINDS)
    console.print(
        f"Re-wrapped under the active key in {report.organizations} organizations: {counts}."
    )
    if report.retired:
        console.print(f"Retired (may now leave BLOCKS_MASTER_KEYS): {', '.join(report.retired)}.")
