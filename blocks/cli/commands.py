"""The `blocks` commands but the two long-lived processes: the dev stack, migrations, operator tools."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import SecretStr
from rich.console import Console
from temporalio.client import Client

from blocks.api.identity.email_field import normalize_email
from blocks.audit_cli import audit_app
from blocks.cli import WorkflowModules
from blocks.cli.audit_export import ExportContent, NoSuchOrganization, export_audit
from blocks.cli.operator_db import operator_database_url
from blocks.core.roles import Role
from blocks.infra.crypto.field_crypto import (
    MasterKeyError,
    install_master_keys,
    load_master_keys,
)
from blocks.infra.crypto.key_specs import new_payload_key_spec
from blocks.infra.crypto.passwords import password_problem
from blocks.infra.crypto.signing import load_signer
from blocks.infra.db import create_engine, session_factory
from blocks.infra.embedded.postgres import EmbeddedPostgres
from blocks.infra.embedded.supervisor import (
    DataDirBusy,
    DataDirLock,
    PortBusy,
    Supervisor,
    interrupt_on_stop_signals,
    spawn,
    wait_port_free,
)
from blocks.infra.embedded.temporal import EmbeddedTemporal
from blocks.infra.migrate import upgrade_database
from blocks.infra.settings import Settings, get_settings
from blocks.infra.temporal.client import connect
from blocks.infra.temporal.schedules import ensure_checkpoint_schedule
from blocks.infra.temporal.search_attributes import ensure_registered
from blocks.models.approvals.catalogue import published_workflows
from blocks.models.base import utcnow
from blocks.models.demo import (
    DemoKeys,
    create_org_by_operator,
    ensure_demo_org,
    issue_member_key,
    set_password_by_operator,
)
from blocks.workers.workflow_modules import WorkflowLoadError, load_workflows
from blocks.workflows.catalogue import workflow_name
from blocks.workflows.checkpoints import CHECKPOINT_WORKFLOW
from blocks.workflows_cli import workflows_app

app = typer.Typer()
app.add_typer(audit_app, name="audit")
app.add_typer(workflows_app, name="workflows")
console = Console()
# What `blocks dev` serves when told nothing: the examples, installed as an author's package is.
DEFAULT_DEV_WORKFLOWS = ("blocks_examples",)
T = TypeVar("T")


@app.command()
def migrate() -> None:
    """Apply database migrations; register search attributes and the checkpoint schedule."""
    settings = get_settings()
    upgrade_database(settings.require_migration_database_url())
    if settings.temporal_address:
        asyncio.run(_register_search_attributes(settings))
    console.print("[green]database and search attributes are up to date[/green]")


@app.command()
def dev(workflows: WorkflowModules = None) -> None:
    """Start PostgreSQL, Temporal and its UI, migrations, the API, a worker and a demo organization.

    The worker serves `--workflows` (or BLOCKS_WORKFLOW_MODULES), by default the examples."""
    settings = get_settings()
    modules = workflows or settings.workflow_modules or list(DEFAULT_DEV_WORKFLOWS)
    try:
        load_workflows(modules)  # fail here, naming the module, rather than in a restart loop
    except WorkflowLoadError as err:
        console.print(str(err), style="red", markup=False)
        raise typer.Exit(2) from None
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    lock = DataDirLock(settings.data_dir)
    try:
        lock.acquire()
    except DataDirBusy as err:
        console.print(
            f"{err}; stop that one first (Ctrl-C in its terminal).", style="red", markup=False
        )
        raise typer.Exit(1) from None
    interrupt_on_stop_signals()
    supervisor = Supervisor(lambda line: console.print(line, style="yellow", markup=False))
    try:
        env = dict(os.environ) | {"BLOCKS_WORKFLOW_MODULES": ",".join(modules)}
        owner_url: str | None = None
        if settings.database_url is None:
            console.print(f"starting PostgreSQL on 127.0.0.1:{settings.postgres_port} ...")
            postgres = EmbeddedPostgres(settings.data_dir, port=settings.postgres_port)
            supervisor.start("PostgreSQL", postgres.spawn, postgres.stop_server)
            credentials = postgres.credentials()
            env["BLOCKS_DATABASE_URL"] = credentials.url()
            # Only this process migrates; the API and worker never see the owner's password.
            owner_url = credentials.url(owner=True)
        if settings.temporal_address is None:
            console.print(f"starting Temporal on 127.0.0.1:{settings.temporal_port} ...")
            temporal = EmbeddedTemporal(
                settings.data_dir / "temporal",
                port=settings.temporal_port,
                ui_port=settings.temporal_ui_port,
                codec_endpoint=f"http://127.0.0.1:{settings.api_port}/v1/codec",
            )
            supervisor.start("Temporal", temporal.start)
            env["BLOCKS_TEMPORAL_ADDRESS"] = temporal.address
            # The UI's page calls the codec endpoint from its own origin, by either name.
            ui = settings.temporal_ui_port
            env.setdefault(
                "BLOCKS_CODEC_CORS_ORIGINS", f"http://127.0.0.1:{ui},http://localhost:{ui}"
            )
        effective = settings.model_copy(
            update={
                "database_url": SecretStr(env["BLOCKS_DATABASE_URL"])
                if "BLOCKS_DATABASE_URL" in env
                else settings.database_url,
                "temporal_address": env.get("BLOCKS_TEMPORAL_ADDRESS", settings.temporal_address),
            }
        )
        upgrade_database(owner_url or effective.require_migration_database_url())
        keys = asyncio.run(_prepare(effective))
        wait_port_free(settings.api_host, settings.api_port)
        started_at = utcnow()
        for command in ("api", "worker"):
            args = [sys.executable, "-m", "blocks.cli", command]
            supervisor.start(command, partial(spawn, args, env=env))
        # The banner says "running" once the worker has published what it serves: a start sent
        # the moment it shows must not meet "no worker has published".
        names = [workflow_name(cls) for cls in load_workflows(modules)]
        if not asyncio.run(_wait_for_catalogue(effective, names, since=started_at)):
            console.print(
                "the worker has not published its workflows yet; see its output above",
                style="yellow",
            )
        _print_banner(effective, keys, modules)
        supervisor.run()
    except KeyboardInterrupt:
        pass
    except PortBusy as err:
        console.print(f"{err}; stop it or choose another port.", style="red", markup=False)
        raise typer.Exit(1) from None
    finally:
        supervisor.stop_all()
        lock.release()
        console.print("stopped")


@app.command("payload-key")
def payload_key(key_id: Annotated[str, typer.Option(help="an id for the new key")] = "k1") -> None:
    """Print a new AES-256 payload key as `id:base64`, for BLOCKS_PAYLOAD_KEYS."""
    console.print(new_payload_key_spec(key_id), soft_wrap=True)


@app.command("api-key")
def api_key(
    org: Annotated[str, typer.Option(help="organization slug")],
    email: Annotated[str, typer.Option(help="the member the key acts as")],
    role: Annotated[list[Role], typer.Option(help="roles the key may use (repeatable)")],
    name: Annotated[str, typer.Option(help="a label for the key")] = "cli",
) -> None:
    """Create an API key for a member (operator tooling; the key is printed once)."""
    key = asyncio.run(
        _operate(get_settings(), issue_member_key, org_slug=org, email=email, roles=role, name=name)
    )
    console.print(key)


@app.command("set-password")
def set_password(
    email: Annotated[str, typer.Option(help="the person's email address")],
) -> None:
    """Set a person's password (asked twice, never echoed); their sessions end. For the first
    owner of a deployment that sends no email, and for `blocks dev`."""
    address = normalize_email(email)
    password = typer.prompt("New password", hide_input=True, confirmation_prompt=True)
    problem = password_problem(password, user_inputs=(address,))
    if problem is not None:
        console.print(f"[red]The password {problem}.[/red]")
        raise typer.Exit(1)
    asyncio.run(
        _operate(get_settings(), set_password_by_operator, email=address, password=password)
    )
    console.print(f"Password set for {address}; sign in with POST /v1/auth/signin.")


@app.command("create-org")
def create_org(
    slug: Annotated[str, typer.Option(help="short name in URLs: a-z, 0-9 and -")],
    name: Annotated[str, typer.Option(help="display name")],
    owner_email: Annotated[str, typer.Option(help="the first owner's email address")],
    owner_name: Annotated[str, typer.Option(help="the first owner's name")] = "Owner",
) -> None:
    """Create an organization and its first owner (when sign-up is closed: BLOCKS_OPEN_SIGNUP=false)."""
    org_id = asyncio.run(
        _operate(
            get_settings(),
            create_org_by_operator,
            slug=slug,
            name=name,
            owner_email=normalize_email(owner_email),
            owner_name=owner_name,
        )
    )
    console.print(f"Organization {slug} created ({org_id}).")


async def _operate(settings: Settings, action: Callable[..., Awaitable[T]], **kwargs: Any) -> T:
    """Run one operator action in one transaction on the deployment's database."""
    install_master_keys(load_master_keys(settings))
    engine = create_engine(operator_database_url(settings), pool_size=1)
    try:
        async with session_factory(engine)() as session, session.begin():
            return await action(session, **kwargs)
    except LookupError as err:
        console.print(f"[red]{err}[/red]")
        raise typer.Exit(1) from err
    finally:
        await engine.dispose()


@audit_app.command("public-key")
def audit_public_key() -> None:
    """Print the public half of this deployment's checkpoint signing key, as the API's
    BLOCKS_AUDIT_PUBLIC_KEYS wants it (run it where the signing key is: the worker's settings)."""
    public = load_signer(get_settings()).public()
    print(f"{public.key_id}:{public.b64()}")


@audit_app.command("export")
def audit_export(
    out: Annotated[Path, typer.Option(help="the JSON Lines file to write")],
    org: Annotated[str | None, typer.Option(help="organization slug")] = None,
    platform: Annotated[
        bool, typer.Option(help="the platform chain: sign-ups, sign-ins, resets")
    ] = False,
    content: Annotated[
        ExportContent,
        typer.Option(
            help="run content sealed, as the chain holds it, or revealed for an auditor (a "
            "content line per event, checked by `blocks audit verify`; recorded in the chain)"
        ),
    ] = ExportContent.SEALED,
) -> None:
    """Export one organization's audit chain (or the platform's) for `blocks audit verify`."""
    if (org is None) == (not platform):
        console.print("[red]Give either --org SLUG or --platform.[/red]")
        raise typer.Exit(2)
    if platform and content is ExportContent.REVEALED:
        console.print(
            "[red]Run content is an organization's: --content revealed needs --org.[/red]"
        )
        raise typer.Exit(2)
    try:
        count = asyncio.run(export_audit(get_settings(), org, out, content))
    except (NoSuchOrganization, MasterKeyError) as err:
        console.print(f"[red]{err}[/red]")
        raise typer.Exit(1) from None
    console.print(f"{count} lines written to {out}; check it with `blocks audit verify {out}`.")


async def _register_search_attributes(settings: Settings) -> None:
    """Search attributes and the checkpoint schedule: what Temporal must hold before workers run."""
    client: Client = await connect(settings)
    await ensure_registered(client)
    await ensure_checkpoint_schedule(client, settings, CHECKPOINT_WORKFLOW)


async def _wait_for_catalogue(
    settings: Settings, names: list[str], *, since: datetime, within: float = 90.0
) -> bool:
    """True once a worker started after `since` has published every one of `names`."""
    engine = create_engine(settings.require_database_url(), pool_size=1)
    deadline = asyncio.get_running_loop().time() + within
    try:
        while asyncio.get_running_loop().time() < deadline:
            async with session_factory(engine)() as session:
                fresh = {
                    view.workflow.name
                    for view in await published_workflows(session)
                    if any(server.last_seen_at >= since for server in view.servers)
                }
            if fresh.issuperset(names):
                return True
            await asyncio.sleep(0.3)
        return False
    finally:
        await engine.dispose()


async def _prepare(settings: Settings) -> DemoKeys | None:
    await _register_search_attributes(settings)
    if not settings.demo_org:
        return None
    engine = create_engine(settings.require_database_url(), pool_size=1)
    try:
        async with session_factory(engine)() as session, session.begin():
            return await ensure_demo_org(session)
    finally:
        await engine.dispose()


def _print_banner(settings: Settings, keys: DemoKeys | None, modules: list[str]) -> None:
    console.rule("[bold]Blocks is running")
    console.print(f"API          http://{settings.api_host}:{settings.api_port}  (docs at /docs)")
    console.print(f"Temporal UI  http://127.0.0.1:{settings.temporal_ui_port}")
    console.print(f"Temporal     {settings.temporal_address}")
    console.print(f"Workflows    {', '.join(modules)}  (GET /v1/workflows; --workflows to change)")
    if keys is not None:
        console.print("\n[bold]Demo organization created. These keys are shown once:[/bold]")
        console.print(f"owner    ({keys.owner_email}):    {keys.owner_key}", soft_wrap=True)
        console.print(f"approver ({keys.approver_email}): {keys.approver_key}", soft_wrap=True)
        console.print(f"agent    ({keys.agent_name}):    {keys.agent_token}", soft_wrap=True)
        console.print(
            f"To serve the example agent: BLOCKS_AGENT_TOKEN=<the agent token> blocks agent run "
            f"--url http://{settings.api_host}:{settings.api_port} --app-dir examples/agents "
            "invoice_agent:agent",
            soft_wrap=True,
            markup=False,
        )
        console.print(
            f"To sign in as a person: blocks set-password --email {keys.owner_email}, then "
            "POST /v1/auth/signin (no email is sent in dev unless BLOCKS_SMTP_HOST is set)."
        )
    else:
        console.print(
            "\nDemo organization already exists; its keys were shown when it was created."
        )
    if settings.agent_dev_no_auth:
        console.print(
            "\nBLOCKS_AGENT_DEV_NO_AUTH: agents on this machine may connect WITHOUT a token "
            "(blocks agent run --dev-agent NAME), as agents of the demo organization.",
            style="bold red",
            markup=False,
        )
    console.print("\nPress Ctrl-C to stop everything.")
