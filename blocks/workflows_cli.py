"""`blocks workflows check-replay`: would the code about to be deployed replay the runs in flight?

Exit status, for an author's CI: 0 every history replayed, 1 at least one did not (each is named
with its run id and the first error), 2 nothing could be checked (a module failed to load, an
unknown `--workflow`, a setting refused, or Temporal could not be reached or read).
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from temporalio.service import RPCError

from blocks.infra.crypto.field_crypto import install_master_keys, load_master_keys
from blocks.infra.crypto.org_keys import install_org_keys
from blocks.infra.db import create_engine
from blocks.infra.settings import Settings, get_settings
from blocks.infra.temporal.client import connect
from blocks.models.keys.org_keys import DatabaseOrgKeys
from blocks.workers.replay import ReplayedRun, check_replay
from blocks.workers.workflow_modules import WorkflowLoadError, load_author_code
from blocks.workflows.catalogue import workflow_name
from blocks.workflows.sdk import BlocksWorkflow

workflows_app = typer.Typer(
    help="Tools for the workflows an author ships (`--workflows PKG`).", no_args_is_help=True
)

_CANNOT_CHECK = 2


@workflows_app.command("check-replay")
def check_replay_command(
    workflows: Annotated[
        list[str] | None,
        typer.Option(
            "--workflows",
            help="a module whose workflows to check, as `blocks worker --workflows` takes it"
            " (repeatable); default: BLOCKS_WORKFLOW_MODULES",
        ),
    ] = None,
    limit: Annotated[
        int,
        typer.Option(
            "--limit",
            min=1,
            max=10_000,
            help="histories per workflow name: this many running and this many closed runs",
        ),
    ] = 50,
    only: Annotated[
        list[str] | None,
        typer.Option("--workflow", help="check only this workflow name (repeatable)"),
    ] = None,
) -> None:
    """Replay recent histories of each workflow the modules define against this code.

    Exit 0 when every history replays, 1 when one does not, 2 when nothing could be checked."""
    out = Console(soft_wrap=True, highlight=False)
    err = Console(stderr=True, soft_wrap=True, highlight=False)
    try:
        settings = get_settings()
    except ValidationError as error:  # a setting refused: nothing checked, which is not a failure
        err.print(escape(str(error)), style="red")
        raise typer.Exit(_CANNOT_CHECK) from None
    modules = workflows or settings.workflow_modules
    if not modules:
        err.print("[red]no workflow modules: give --workflows PKG or BLOCKS_WORKFLOW_MODULES[/]")
        raise typer.Exit(_CANNOT_CHECK)
    try:
        code = load_author_code(modules)
    except WorkflowLoadError as error:
        err.print(escape(str(error)), style="red")
        raise typer.Exit(_CANNOT_CHECK) from None
    defined = [workflow_name(cls) for cls in code.workflows]
    unknown = [name for name in only or () if name not in defined]
    if unknown:
        err.print(
            f"[red]--workflow {escape(', '.join(unknown))}: not defined by"
            f" {escape(', '.join(modules))} (it defines {escape(', '.join(defined))})[/]"
        )
        raise typer.Exit(_CANNOT_CHECK)
    try:
        results = asyncio.run(_replay(settings, code.workflows, limit=limit, only=only))
    except (RuntimeError, RPCError) as error:  # Temporal unreachable, or refusing the listing
        err.print(f"[red]could not read histories from Temporal: {escape(str(error))}[/]")
        raise typer.Exit(_CANNOT_CHECK) from None
    raise typer.Exit(_report(out, results, checked=only or defined))


async def _replay(
    settings: Settings,
    workflows: list[type[BlocksWorkflow]],
    *,
    limit: int,
    only: list[str] | None,
) -> list[ReplayedRun]:
    client = await connect(settings)
    if settings.database_url is None:
        return await check_replay(client, workflows, limit=limit, names=only)
    # Runs' histories are sealed under their organizations' keys, which live in the database.
    engine = create_engine(settings.database_url.get_secret_value(), pool_size=2)
    install_master_keys(load_master_keys(settings))
    install_org_keys(DatabaseOrgKeys(engine))
    try:
        return await check_replay(client, workflows, limit=limit, names=only)
    finally:
        await engine.dispose()


def _report(console: Console, results: list[ReplayedRun], *, checked: list[str]) -> int:
    """Print one line per run (scripts grep them), then the verdict; the exit status."""
    for run in results:
        if run.ok:
            console.print(f"[green]ok[/]      {escape(run.workflow)}  run {escape(run.run_id)}")
        else:
            console.print(
                f"[bold red]FAILED[/]  {escape(run.workflow)}  run {escape(run.run_id)}:"
                f" {escape(run.error or '')}"
            )
    failed = [run for run in results if not run.ok]
    names = ", ".join(checked)
    if not results:
        console.print(f"no histories of {escape(names)} in Temporal yet: nothing to replay")
        return 0
    if failed:
        console.print(
            f"[bold red]{len(failed)} of {len(results)} histories do not replay[/] against this"
            " code: deploying it would break those runs. Put the change behind"
            " workflow.patched(...) (docs/authoring.md)."
        )
        return 1
    console.print(f"[bold green]all {len(results)} histories replay[/] ({escape(names)})")
    return 0
