"""The lock files cover pyproject.toml, pin every package with hashes, and agree with each other."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
RUNTIME_LOCK = ROOT / "requirements.txt"
TEST_LOCK = ROOT / "requirements-test.txt"
# One pin: `name==version [; marker]`, then its `--hash=` continuation lines.
_ENTRY = re.compile(
    r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+?)(?: ;[^\\\n]*)? \\\n((?:\s+--hash=\S+(?: \\)?\n)+)", re.M
)


def _pins(lock: Path) -> dict[str, set[str]]:
    pins: dict[str, set[str]] = {}
    for name, version, hashes in _ENTRY.findall(lock.read_text()):
        assert "--hash=sha256:" in hashes, f"{lock.name}: {name} has no sha256 hash"
        pins.setdefault(canonicalize_name(name), set()).add(version)
    return pins


def _project() -> dict[str, object]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]  # type: ignore[no-any-return]


def _requirements(*extras: str) -> list[Requirement]:
    project = _project()
    listed = list(project["dependencies"])  # type: ignore[call-overload]
    optional = project["optional-dependencies"]
    for extra in extras:
        listed += optional[extra]  # type: ignore[index]
    return [Requirement(item) for item in listed]


def test_every_line_of_each_lock_is_a_pin_with_hashes_or_a_comment() -> None:
    for lock in (RUNTIME_LOCK, TEST_LOCK):
        text = lock.read_text()
        stripped = _ENTRY.sub("", text)
        leftover = [
            line
            for line in stripped.splitlines()
            if line.strip() and not line.lstrip().startswith("#")
        ]
        # pip's --require-hashes refuses an unhashed pin; this names it before an install does.
        assert not leftover, f"{lock.name}: not a hashed pin: {leftover[:3]}"
        assert _pins(lock), f"{lock.name} pins nothing"


@pytest.mark.parametrize(("lock", "extras"), [(RUNTIME_LOCK, ("redis",)), (TEST_LOCK, ("test",))])
def test_each_lock_satisfies_pyproject(lock: Path, extras: tuple[str, ...]) -> None:
    """A dependency added to or tightened in pyproject.toml without `make lock` fails here."""
    pins = _pins(lock)
    stale = []
    for requirement in _requirements(*extras):
        versions = pins.get(canonicalize_name(requirement.name), set())
        if not versions or not all(requirement.specifier.contains(v) for v in versions):
            stale.append(f"{requirement} (locked: {sorted(versions) or 'missing'})")
    assert not stale, f"{lock.name} is stale, run `make lock`: {stale}"


def test_the_runtime_lock_is_the_test_lock_less_the_test_tools() -> None:
    runtime, test = _pins(RUNTIME_LOCK), _pins(TEST_LOCK)
    differing = {name: (v, test.get(name)) for name, v in runtime.items() if test.get(name) != v}
    # `make dev`, the image and `make test` run the same versions of everything they share.
    assert not differing, f"the locks disagree: {differing}"
    assert "pytest" in test
    assert "pytest" not in runtime
