"""The `blocks` command; each subcommand's module is imported only when that subcommand runs.

`blocks api` and `blocks worker` are a deployment's long-lived processes. Were every command's
dependencies imported up front, the API would carry the worker, alembic and the embedded servers,
and the worker the whole HTTP API and the password-strength lists: about 15 MB and 45 MB of
memory each for code they never run. So this package's root names the module of each command
and loads it by name, the one place Blocks imports by name rather than by statement.
"""

from __future__ import annotations

import importlib
from typing import Annotated

import typer
from typer.core import TyperGroup

# Where each command is defined; every command not named here is in blocks.cli.commands.
_MODULES = {
    "api": "blocks.cli.api",
    "worker": "blocks.cli.worker",
    "keys": "blocks.cli.keys",
    "agent": "blocks.cli.agent",
    "domains": "blocks.cli.domains",
}
_OTHERS = "blocks.cli.commands"

WorkflowModules = Annotated[
    list[str] | None,
    typer.Option(
        "--workflows",
        help="a module whose BlocksWorkflow subclasses to serve (repeatable);"
        " default: BLOCKS_WORKFLOW_MODULES",
    ),
]


def _commands_of(module: str) -> TyperGroup:
    """The commands a module's `app` (a `typer.Typer`) defines, as one group."""
    return typer.main.get_group(importlib.import_module(module).app)


class _Commands(TyperGroup):
    """`blocks`'s commands, each loaded from its module when it runs, or when all are listed."""

    def get_command(self, ctx: typer.Context, cmd_name: str) -> typer.core.TyperCommand | None:
        # The tool's sub-apps (`blocks audit ...`) are groups; both are click commands.
        found = _commands_of(_MODULES.get(cmd_name, _OTHERS)).get_command(ctx, cmd_name)
        if found is None:
            self.list_commands(ctx)  # an unknown name: load all, so a typo gets its suggestion
        return found  # type: ignore[return-value]

    def list_commands(self, ctx: typer.Context) -> list[str]:
        for module in (*_MODULES.values(), _OTHERS):
            self.commands.update(_commands_of(module).commands)
        return list(self.commands)


app = typer.Typer(
    cls=_Commands,
    help="Blocks: durable workflows with approvals and a verifiable audit trail.",
    no_args_is_help=True,
)


@app.callback()
def _root() -> None:
    """Blocks: durable workflows with approvals and a verifiable audit trail."""
