"""The direction of the layers, kept by a check rather than by memory.

`core` is pure: it imports nothing of Blocks outside `core`, only the standard library and a short
list of pure libraries; `models` never imports `api`; every layer imports only the layers below
it; and no module of Blocks is imported inside a function (a deferred import hides a cycle).
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.unit.source_trees import parse

PACKAGE = Path(__file__).resolve().parents[2] / "blocks"

# Which layers of Blocks each layer may import (besides itself).
ALLOWED_LAYERS: dict[str, frozenset[str]] = {
    "core": frozenset(),
    "infra": frozenset({"core"}),
    "models": frozenset({"core", "infra"}),
    "workflows": frozenset({"core", "activities"}),  # activity references, passed through
    "activities": frozenset({"core", "infra", "models"}),
    "api": frozenset({"core", "infra", "models", "workflows"}),
    "workers": frozenset({"core", "infra", "models", "activities", "workflows"}),
    "audit_cli": frozenset({"core"}),
    # `models` for the organization keys that open the histories it replays.
    "workflows_cli": frozenset({"infra", "models", "workers", "workflows"}),
    "cli": frozenset(
        {
            "core",
            "infra",
            "models",
            "api",
            "workers",
            "workflows",
            "audit_cli",
            "workflows_cli",
            "agent",
        }
    ),
    # The agent SDK runs on agent owners' machines, on its own: only `core` (the protocol) of
    # Blocks. No layer but `cli` lists it, so nothing else of Blocks imports it.
    "agent": frozenset({"core"}),
    # The authoring kit (authors' tests): above the worker, whose sandbox it runs workflows in.
    # No layer lists it, so no module of Blocks may import it.
    "testing": frozenset({"core", "infra", "models", "activities", "workflows", "workers"}),
}

# Libraries outside the standard library that `core` may import: each is pure computation with
# no I/O and no global state, so `core` stays safe inside the workflow sandbox and offline.
CORE_LIBRARIES: dict[str, str] = {
    "rfc8785": "canonical JSON (RFC 8785) that the audit chain hashes",
    "cryptography": "Ed25519 verification of checkpoints and AES-GCM opening of run content"
    " with a key handed in, offline",
    "orjson": "optional: writes the audit chain's canonical JSON faster, byte for byte the same",
    "temporalio.common": "typed search-attribute keys (declarations only)",
}


@dataclass(frozen=True)
class Violation:
    module: str
    line: int
    imported: str
    why: str

    def __str__(self) -> str:
        return f"{self.module}:{self.line} imports {self.imported}: {self.why}"


def _imports(tree: ast.AST) -> list[tuple[ast.stmt, str, bool]]:
    """(statement, imported module, inside a function?) for every absolute import."""
    found: list[tuple[ast.stmt, str, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.Import):
                found.extend((child, alias.name, in_function) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                found.append((child, child.module, in_function))
            visit(child, nested)

    visit(tree, False)
    return found


def _library_allowed_in_core(imported: str) -> bool:
    top = imported.split(".")[0]
    if top in sys.stdlib_module_names or top == "__future__":
        return True
    return any(imported == lib or imported.startswith(lib + ".") for lib in CORE_LIBRARIES)


def violations(module: str, source: str) -> list[Violation]:
    """What is wrong with the imports of `module` (dotted name under `blocks`), given its source."""
    parts = module.split(".")
    layer = parts[1] if len(parts) > 1 else parts[0]
    allowed = ALLOWED_LAYERS.get(layer)
    found: list[Violation] = []
    for statement, imported, in_function in _imports(parse(source)):
        line = statement.lineno
        if imported == "blocks" or imported.startswith("blocks."):
            target = imported.split(".")[1] if "." in imported else "blocks"
            if in_function:
                found.append(Violation(module, line, imported, "deferred import of Blocks"))
            if (
                target != layer
                and target != "blocks"
                and (allowed is None or target not in allowed)
            ):
                found.append(Violation(module, line, imported, f"{layer} may not import {target}"))
        elif layer == "core" and not _library_allowed_in_core(imported):
            found.append(Violation(module, line, imported, "core imports only core and stdlib"))
    return found


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = [p for p in relative.parts if p != "__init__"]
        out.append((".".join(parts), path))
    return out


def test_every_module_imports_in_the_direction_of_the_layers() -> None:
    found = [v for name, path in _modules() for v in violations(name, path.read_text())]
    assert not found, "\n".join(map(str, found))


def test_every_layer_is_known_to_the_check() -> None:
    layers = {name.split(".")[1] for name, _ in _modules() if name.count(".") >= 1}
    assert layers <= set(ALLOWED_LAYERS), layers - set(ALLOWED_LAYERS)


@pytest.mark.parametrize(
    ("module", "source", "why"),
    [
        ("blocks.core.approvals.policy", "from blocks.models.identity.orgs import User\n", "core"),
        ("blocks.core.audit.chain", "import psycopg\n", "core imports only core and stdlib"),
        ("blocks.core.audit.chain", "from sqlalchemy import text\n", "core imports only"),
        ("blocks.models.audit.events", "from blocks.api.deps import DbSession\n", "models"),
        ("blocks.infra.db", "from blocks.models.base import utcnow\n", "infra may not"),
        ("blocks.workflows.sdk", "from blocks.infra.db import bound_org\n", "workflows may"),
        ("blocks.workers.main", "from blocks.testing import WorkflowKit\n", "workers may not"),
        ("blocks.cli", "from blocks.testing import WorkflowKit\n", "cli may not"),
        ("blocks.testing", "from blocks.api.deps import DbSession\n", "testing may not"),
        ("blocks.agent.runner", "from blocks.infra.db import bound_org\n", "agent may not"),
        ("blocks.api.main", "from blocks.agent import Agent\n", "api may not import agent"),
        (
            "blocks.api.errors",
            "def f():\n    from blocks.api import rate_limit\n",
            "deferred import",
        ),
    ],
)
def test_the_check_catches_a_deliberate_violation(module: str, source: str, why: str) -> None:
    found = violations(module, source)
    assert found, f"{module} importing {source!r} passed the check"
    assert any(why in str(v) for v in found), found


def test_the_check_lets_what_is_allowed_pass() -> None:
    assert not violations("blocks.core.audit.chain", "import hashlib\nimport rfc8785\n")
    assert not violations("blocks.models.audit.events", "from blocks.core.audit import records\n")
    assert not violations("blocks.api.deps", "from blocks.models.identity import api_keys\n")
