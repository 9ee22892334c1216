"""Loading an author's workflow modules: what is served, and each way a module is refused."""

from __future__ import annotations

import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from blocks.workers.workflow_modules import WorkflowLoadError, load_author_code, load_workflows

_WORKFLOW = """
from temporalio import activity, workflow
from blocks.workflows.sdk import BlocksWorkflow, RunInput, RunOutcome

@activity.defn(name="{prefix}.look_up")
async def look_up(item: str) -> str:
    return item

@workflow.defn(name="{name}")
class {cls}(BlocksWorkflow):
    @workflow.run
    async def run(self, run_input: RunInput) -> RunOutcome:
        self.begin(run_input)
        return await self.finish("done")
"""


@pytest.fixture
def package(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """An empty package on sys.path with a unique name; its modules are forgotten afterwards."""
    name = f"author_{uuid.uuid4().hex[:8]}"
    (tmp_path / name).mkdir()
    (tmp_path / name / "__init__.py").write_text("")
    sys.path.insert(0, str(tmp_path))
    yield tmp_path / name, name
    sys.path.remove(str(tmp_path))
    for module in [m for m in sys.modules if m == name or m.startswith(f"{name}.")]:
        del sys.modules[module]


def _write(folder: Path, module: str, source: str) -> None:
    (folder / f"{module}.py").write_text(textwrap.dedent(source))


def test_serves_the_workflows_and_activities_a_module_defines(
    package: tuple[Path, str],
) -> None:
    folder, name = package
    _write(folder, "flows", _WORKFLOW.format(prefix=name, name=f"{name}_flow", cls="Flow"))
    loaded = load_author_code([f"{name}.flows"])
    assert [cls.__name__ for cls in loaded.workflows] == ["Flow"]
    assert [fn.__name__ for fn in loaded.activities] == ["look_up"]


def test_the_examples_load_like_an_author_package() -> None:
    names = sorted(cls.__name__ for cls in load_workflows(["blocks_examples"]))
    assert names == ["ContractReview", "DraftedReply", "ExpenseApproval", "PurchaseApproval"]


def test_a_module_that_fails_to_import_is_named_with_its_cause(
    package: tuple[Path, str],
) -> None:
    folder, name = package
    _write(folder, "broken", "import no_such_dependency_anywhere\n")
    with pytest.raises(WorkflowLoadError) as refused:
        load_workflows([f"{name}.broken"])
    assert f"{name}.broken" in str(refused.value)
    assert "ModuleNotFoundError" in str(refused.value)
    assert "no_such_dependency_anywhere" in str(refused.value)
    with pytest.raises(WorkflowLoadError, match="failed to import"):
        load_workflows([f"{name}.missing_module"])


def test_two_workflows_with_one_name_are_refused(package: tuple[Path, str]) -> None:
    folder, name = package
    _write(folder, "one", _WORKFLOW.format(prefix=f"{name}.a", name=f"{name}_flow", cls="One"))
    _write(folder, "two", _WORKFLOW.format(prefix=f"{name}.b", name=f"{name}_flow", cls="Two"))
    with pytest.raises(WorkflowLoadError) as refused:
        load_workflows([f"{name}.one", f"{name}.two"])
    message = str(refused.value)
    assert f"two workflows are named '{name}_flow'" in message
    assert f"{name}.one.One" in message
    assert f"{name}.two.Two" in message


def test_a_module_without_workflows_or_taking_a_reserved_name_is_refused(
    package: tuple[Path, str],
) -> None:
    folder, name = package
    _write(folder, "empty", "VALUE = 1\n")
    with pytest.raises(WorkflowLoadError, match="defines no BlocksWorkflow"):
        load_workflows([f"{name}.empty"])
    _write(
        folder,
        "taken",
        _WORKFLOW.format(prefix=name, name="blocks.audit_checkpoints", cls="Taken"),
    )
    with pytest.raises(WorkflowLoadError, match="reserves"):
        load_workflows([f"{name}.taken"])
