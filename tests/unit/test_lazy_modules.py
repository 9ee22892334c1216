"""Modules loaded on first use (infra.lazy_modules): nothing runs until an attribute is read."""

from __future__ import annotations

import inspect
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from blocks.infra.lazy_modules import lazy_module

MODULE = "blocks_lazy_probe"


@pytest.fixture
def probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A module that counts, in a file, how often its code ran."""
    runs = tmp_path / "runs"
    runs.write_text("")
    (tmp_path / f"{MODULE}.py").write_text(
        f"from pathlib import Path\n"
        f"Path({str(runs)!r}).write_text(Path({str(runs)!r}).read_text() + 'x')\n"
        f"VALUE = 42\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield runs
    sys.modules.pop(MODULE, None)


def test_the_module_runs_at_the_first_attribute_read_and_once(probe: Path) -> None:
    module = lazy_module(MODULE)
    assert probe.read_text() == ""
    assert lazy_module(MODULE) is module  # asked again before use: the same, still not run
    assert probe.read_text() == ""
    assert module.VALUE == 42
    assert module.VALUE == 42
    assert probe.read_text() == "x"


def test_a_module_already_imported_is_returned_as_it_is() -> None:
    assert lazy_module("json") is sys.modules["json"]


def test_a_missing_module_fails_at_once() -> None:
    with pytest.raises(ModuleNotFoundError, match="blocks_no_such_module"):
        lazy_module("blocks_no_such_module")


def test_code_that_walks_every_loaded_module_does_not_load_it(probe: Path) -> None:
    """inspect.getmodule reads `__file__` of every module loaded (pydantic calls it for
    attribute docstrings, as scim2-models' models have): the stand-in is not loaded by it."""
    module = lazy_module(MODULE)
    assert inspect.getmodule(test_code_that_walks_every_loaded_module_does_not_load_it)
    inspect.getmodule(object())  # a miss walks every loaded module
    assert module.__file__ is not None
    assert probe.read_text() == ""
    assert module.VALUE == 42
    assert probe.read_text() == "x"
