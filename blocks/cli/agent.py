"""`blocks agent run`: serve an agent's skills to Blocks from this machine (the agent SDK)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console, ConsoleRenderable
from rich.logging import RichHandler
from rich.text import Text

from blocks.agent import AccessRefused, Agent, SessionError

app = typer.Typer()
agent_app = typer.Typer(help="Run an agent that serves skills to Blocks.", no_args_is_help=True)
app.add_typer(agent_app, name="agent")
console = Console(stderr=True)


class AgentLoadError(Exception):
    """`module:attribute` does not name an Agent; the message says why."""


def load_agent(spec: str, app_dir: Path) -> Agent:
    """The Agent at `module:attribute`, the module imported from `app_dir` first."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise AgentLoadError(f"{spec!r}: give MODULE:ATTRIBUTE, e.g. invoice_agent:agent")
    sys.path.insert(0, str(app_dir.resolve()))
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name is not None and (module_name + ".").startswith(err.name + "."):
            raise AgentLoadError(f"no module {module_name!r} (looked in {app_dir})") from None
        raise
    found = module
    for name in attribute.split("."):
        if not hasattr(found, name):
            raise AgentLoadError(f"module {module_name!r} has no attribute {attribute!r}")
        found = getattr(found, name)
    if not isinstance(found, Agent):
        raise AgentLoadError(f"{spec} is a {type(found).__name__}, not a blocks.agent.Agent")
    return found


@agent_app.command("run")
def run(
    target: Annotated[
        str, typer.Argument(help="MODULE:ATTRIBUTE of the Agent, e.g. my_agent:agent")
    ],
    url: Annotated[
        str, typer.Option(envvar="BLOCKS_AGENT_URL", help="the Blocks API's address")
    ] = "http://127.0.0.1:8000",
    token: Annotated[
        str,
        typer.Option(
            envvar="BLOCKS_AGENT_TOKEN",
            help="the agent token (blkagent_...); better in BLOCKS_AGENT_TOKEN than on the "
            "command line, where other users of the machine can see it",
            show_default=False,
        ),
    ] = "",
    dev_agent: Annotated[
        str,
        typer.Option(
            help="connect WITHOUT a token as the demo organization's agent of this name: only "
            "to a Blocks in dev mode on this machine with BLOCKS_AGENT_DEV_NO_AUTH=1",
            show_default=False,
        ),
    ] = "",
    app_dir: Annotated[
        Path, typer.Option(help="where to import MODULE from (default: the current directory)")
    ] = Path(),
    verbose: Annotated[bool, typer.Option(help="debug logs, with handlers' tracebacks")] = False,
) -> None:
    """Connect to Blocks, receive tasks for the agent's skills, answer them; reconnect on any drop.

    Stops on Ctrl-C or SIGTERM, or when Blocks refuses the token (revoked or rotated)."""
    _configure_logging(verbose)
    if token and dev_agent:
        console.print(
            "[red]--dev-agent connects without a token: give it or a token (--token, "
            "BLOCKS_AGENT_TOKEN), not both.[/red]"
        )
        raise typer.Exit(2)
    if not token and not dev_agent:
        console.print(
            "[red]No agent token: give --token or set BLOCKS_AGENT_TOKEN "
            "(or --dev-agent NAME against a local Blocks in dev mode).[/red]"
        )
        raise typer.Exit(2)
    if dev_agent:
        console.print(
            f"Connecting as dev agent {dev_agent!r} WITHOUT a token (dev mode only).",
            style="bold red",
            markup=False,
        )
    try:
        agent = load_agent(target, app_dir)
    except AgentLoadError as err:
        console.print(str(err), style="red", markup=False)
        raise typer.Exit(2) from None
    try:
        asyncio.run(_serve(agent, url, token, dev_agent or None))
    except KeyboardInterrupt:
        pass
    except (AccessRefused, SessionError) as err:
        console.print(f"stopped: {err}", style="red", markup=False)
        raise typer.Exit(1) from None
    console.print("stopped")


async def _serve(agent: Agent, url: str, token: str, dev_agent: str | None) -> None:
    """Run the agent until done; SIGTERM (a container stopping) stops it as Ctrl-C does."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError):  # no signal handlers on Windows' loop
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        await agent.run(url=url, token=token, dev_agent=dev_agent)
    except asyncio.CancelledError:
        return


def _configure_logging(verbose: bool) -> None:
    """Logs to stderr through rich. The SDK never logs tokens, task input or output; the HTTP
    and WebSocket libraries stay at warnings (their request lines could carry a signed URL)."""
    handler = _Handler(console=console, show_path=False, rich_tracebacks=True)
    logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=[handler])
    logging.getLogger("blocks.agent").setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in ("httpx", "httpcore", "websockets"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class _Handler(RichHandler):
    """Rich's handler; the runner's dev-mode warning (no token) in bold red."""

    def render_message(self, record: logging.LogRecord, message: str) -> ConsoleRenderable:
        if getattr(record, "dev_mode", False):
            return Text(message, style="bold red")
        return super().render_message(record, message)
