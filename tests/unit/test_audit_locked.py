"""`make audit` fails on a found vulnerability and never reports an unreachable service as clean."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tools.audit_locked import audit_lock, exit_status, locked_pins

ROOT = Path(__file__).resolve().parents[2]
LOCK = """\
# a lock in the format `make lock` writes
fastapi==0.165.0 \\
    --hash=sha256:aa
colorama==0.4.6 ; sys_platform == 'win32' \\
    --hash=sha256:bb
PyYAML==6.0.4 \\
    --hash=sha256:cc
"""
PINS = {("fastapi", "0.165.0"), ("colorama", "0.4.6"), ("pyyaml", "6.0.4")}


def _skipped(*names: str) -> dict[str, Any]:
    """pip-audit's report when its service could not be reached (or knew no such release)."""
    return {
        "dependencies": [
            {"name": n, "skip_reason": f"Dependency not found on PyPI: {n}"} for n in names
        ]
    }


def _project(name: str, version: str, *vulns: dict[str, Any]) -> dict[str, Any]:
    """PyPI's project JSON: `vulnerabilities` belong to `info.version`, the latest release."""
    return {"info": {"name": name, "version": version}, "vulnerabilities": list(vulns)}


def _unreachable(_name: str) -> Mapping[str, Any] | None:
    return None


def test_the_lock_pins_are_read_whatever_their_markers() -> None:
    assert locked_pins(LOCK) == PINS


def test_a_vulnerability_pip_audit_finds_fails_the_audit() -> None:
    report = {
        "dependencies": [
            {"name": "fastapi", "version": "0.165.0", "vulns": [{"id": "GHSA-xxxx"}]},
            {"name": "pyyaml", "version": "6.0.4", "vulns": []},
            {"name": "colorama", "version": "0.4.6", "vulns": []},
        ]
    }
    audit = audit_lock(LOCK, lambda: report, _unreachable)
    assert audit.vulnerabilities == {("fastapi", "0.165.0"): {"GHSA-xxxx"}}
    assert audit.not_audited == set()
    assert exit_status(audit, strict=False) == 1
    assert any(line.startswith("VULNERABLE fastapi==0.165.0") for line in audit.report())


def test_an_unreachable_service_is_reported_as_not_audited_and_fails_only_when_strict() -> None:
    audit = audit_lock(LOCK, lambda: _skipped("fastapi", "pyyaml"), _unreachable)
    assert audit.not_audited == PINS
    assert exit_status(audit, strict=False) == 0
    assert exit_status(audit, strict=True) == 2
    report = audit.report()
    assert report[0] == "3 pins: 0 audited by pip-audit's service, 0 through PyPI's data on " + (
        "their (latest) release, 3 not audited"
    )
    assert report[-1].startswith("NOT AUDITED")
    # pip-audit gives no report at all (it crashed, say): the same, not a clean pass.
    assert audit_lock(LOCK, lambda: None, _unreachable).not_audited == PINS


def test_the_latest_release_data_answers_only_for_a_pin_that_is_the_latest_release() -> None:
    projects = {
        # The pin is the latest release: its advisories are the pin's.
        "fastapi": _project("fastapi", "0.165.0", {"id": "PYSEC-1", "withdrawn": None}),
        # A later release exists: its (empty) advisories say nothing about the pin.
        "pyyaml": _project("PyYAML", "7.0.0"),
        "colorama": _project("colorama", "0.4.6", {"id": "GHSA-old", "withdrawn": "2025-01-01"}),
    }
    audit = audit_lock(LOCK, lambda: _skipped("fastapi", "pyyaml"), projects.get)
    assert audit.by_latest_release == {("fastapi", "0.165.0"), ("colorama", "0.4.6")}
    assert audit.not_audited == {("pyyaml", "6.0.4")}
    # A withdrawn advisory is no finding.
    assert audit.vulnerabilities == {("fastapi", "0.165.0"): {"PYSEC-1"}}
    assert exit_status(audit, strict=False) == 1


def test_pip_audits_own_answer_is_not_second_guessed() -> None:
    report = {
        "dependencies": [
            {"name": n, "version": v, "vulns": []} for n, v in sorted(PINS) if n != "colorama"
        ]
    }
    fetched: list[str] = []

    def fetch(name: str) -> Mapping[str, Any] | None:
        fetched.append(name)
        return _project("colorama", "0.4.6")

    audit = audit_lock(LOCK, lambda: report, fetch)
    assert fetched == ["colorama"]  # only what pip-audit could not answer for
    assert audit.not_audited == set()
    assert exit_status(audit, strict=True) == 0
