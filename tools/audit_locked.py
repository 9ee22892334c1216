"""`make audit`: known vulnerabilities of every pin of a lock file, saying exactly what was checked.

pip-audit checks each pin against its vulnerability service (PyPI's per-release JSON API, which
lists the advisories of that release). Where that service cannot be reached, pip-audit skips the
pin and still says "No known vulnerabilities found"; this wrapper counts such pins as not
audited instead, and tries the one source left: PyPI's project JSON, which lists the advisories
of a project's latest release, so it answers for a pin that is that release and for no other.

Exit status: 1 if any vulnerability was found; 2 with --strict if any pin could not be audited;
0 otherwise, with the pins that could not be audited named (a service out of reach is no reason
for CI to fail, but it is never reported as a clean audit).
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

from pip_audit._dependency_source.interface import PYPI_URL as PIP_AUDIT_INDEX

# The same index pip-audit asks; its JSON API answers for a whole project at /pypi/<name>/json.
PROJECT_JSON = urljoin(PIP_AUDIT_INDEX, "/pypi/{name}/json")
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", re.MULTILINE)


def normalize(name: str) -> str:
    """PEP 503 name normalisation, as PyPI and pip-audit spell names."""
    return re.sub(r"[-_.]+", "-", name).lower()


def locked_pins(lock_text: str) -> set[tuple[str, str]]:
    """(name, version) of every pin of a requirements-format lock, whatever its markers."""
    return {(normalize(name), version) for name, version in _PIN.findall(lock_text)}


@dataclass
class Audit:
    pins: set[tuple[str, str]]
    vulnerabilities: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    by_service: set[tuple[str, str]] = field(default_factory=set)
    by_latest_release: set[tuple[str, str]] = field(default_factory=set)

    @property
    def not_audited(self) -> set[tuple[str, str]]:
        return self.pins - self.by_service - self.by_latest_release

    def report(self) -> list[str]:
        lines = [
            f"{len(self.pins)} pins: {len(self.by_service)} audited by pip-audit's service, "
            f"{len(self.by_latest_release)} through PyPI's data on their (latest) release, "
            f"{len(self.not_audited)} not audited"
        ]
        for (name, version), ids in sorted(self.vulnerabilities.items()):
            lines.append(f"VULNERABLE {name}=={version}: {', '.join(sorted(ids))}")
        if self.not_audited:
            names = ", ".join(f"{n}=={v}" for n, v in sorted(self.not_audited))
            lines.append(f"NOT AUDITED (no vulnerability data reached): {names}")
        return lines


def apply_pip_audit_report(audit: Audit, report: Mapping[str, Any]) -> None:
    """Record what pip-audit's JSON report (`-f json`) says it checked and found."""
    for dependency in report.get("dependencies", []):
        if "skip_reason" in dependency or "version" not in dependency:
            continue
        pin = (normalize(dependency["name"]), dependency["version"])
        if pin not in audit.pins:
            continue
        audit.by_service.add(pin)
        ids = {vuln["id"] for vuln in dependency.get("vulns", [])}
        if ids:
            audit.vulnerabilities.setdefault(pin, set()).update(ids)


def apply_latest_release(audit: Audit, project: Mapping[str, Any]) -> None:
    """Record PyPI's project JSON: its `vulnerabilities` are those of `info.version` alone."""
    info = project.get("info") or {}
    pin = (normalize(str(info.get("name", ""))), str(info.get("version", "")))
    if pin not in audit.pins or pin in audit.by_service:
        return
    audit.by_latest_release.add(pin)
    ids = {v["id"] for v in project.get("vulnerabilities") or [] if not v.get("withdrawn")}
    if ids:
        audit.vulnerabilities.setdefault(pin, set()).update(ids)


def run_pip_audit(lock: Path, timeout: int) -> Mapping[str, Any] | None:
    """pip-audit's JSON report over the lock's pins, or None if it produced none."""
    with tempfile.TemporaryDirectory() as work:
        out = Path(work) / "report.json"
        command = [
            sys.executable, "-m", "pip_audit", "--requirement", str(lock), "--disable-pip",
            "--format", "json", "--output", str(out), "--progress-spinner", "off",
            "--timeout", str(timeout),
        ]  # fmt: skip
        try:
            finished = subprocess.run(
                command, capture_output=True, text=True, check=False, timeout=timeout * 40
            )
        except subprocess.TimeoutExpired:
            print(f"pip-audit did not finish within {timeout * 40} s", file=sys.stderr)
            return None
        if not out.exists():
            last = (finished.stderr.strip().splitlines() or ["(no message)"])[-1]
            print(f"pip-audit produced no report (exit {finished.returncode}): {last[:500]}")
            return None
        report: Mapping[str, Any] = json.loads(out.read_text())
        return report


def fetch_project(name: str, timeout: int) -> Mapping[str, Any] | None:
    try:
        with urllib.request.urlopen(PROJECT_JSON.format(name=name), timeout=timeout) as answer:  # noqa: S310 - a fixed https URL
            project: Mapping[str, Any] = json.load(answer)
            return project
    except (OSError, http.client.HTTPException, ValueError):
        # URLError and timeouts are OSErrors; a dropped connection may be either.
        return None


def audit_lock(
    lock_text: str,
    pip_audit: Callable[[], Mapping[str, Any] | None],
    fetch: Callable[[str], Mapping[str, Any] | None],
) -> Audit:
    audit = Audit(locked_pins(lock_text))
    report = pip_audit()
    if report is not None:
        apply_pip_audit_report(audit, report)
    missing = sorted({name for name, _ in audit.not_audited})
    with ThreadPoolExecutor(max_workers=8) as pool:
        projects: Iterable[Mapping[str, Any] | None] = pool.map(fetch, missing)
        for project in projects:
            if project is not None:
                apply_latest_release(audit, project)
    return audit


def exit_status(audit: Audit, *, strict: bool) -> int:
    if audit.vulnerabilities:
        return 1
    if audit.not_audited and strict:
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lock", type=Path, help="a requirements-format lock file with hashes")
    parser.add_argument("--strict", action="store_true", help="fail if any pin is not audited")
    parser.add_argument("--timeout", type=int, default=15, help="seconds per request")
    args = parser.parse_args(argv)

    audit = audit_lock(
        args.lock.read_text(),
        lambda: run_pip_audit(args.lock, args.timeout),
        lambda name: fetch_project(name, args.timeout),
    )
    for line in audit.report():
        print(line)
    return exit_status(audit, strict=args.strict)


if __name__ == "__main__":
    sys.exit(main())
