"""`blocks audit verify FILE`: check an audit export offline, with no server and no database.

An export with content revealed (`blocks audit export --content revealed`, or the API's
`content=revealed`) has each revealed field checked against what the chain sealed, too. With
`--against CHECKPOINT_FILE` (checkpoints kept outside Blocks, by a witness or a SIEM) the export
must also extend each of them (`audit.consistency`).
"""

from __future__ import annotations

import base64
import binascii
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from blocks.core.audit.chain_verifier import VerificationReport
from blocks.core.audit.consistency import (
    ConsistencyReport,
    UnusableInput,
    Witness,
    check_consistency,
    read_witness,
)
from blocks.core.audit.verify import verify_export

audit_app = typer.Typer(
    help="Audit log tools; `verify` needs nothing but the exported file.", no_args_is_help=True
)


def _header(path: Path) -> dict[str, Any]:
    """The export's header, for the summary only (the verifier checks it on its own)."""
    with path.open("rb") as handle:
        for line in handle:
            if line.strip():
                try:
                    value = json.loads(line)
                except ValueError:
                    return {}
                return value if isinstance(value, dict) else {}
    return {}


def _scope(header: dict[str, Any], report: VerificationReport) -> str:
    if report.complete:
        return "complete chain (gaps, order and the chain head are checked)"
    filters = header.get("filters") or {}
    shown = ", ".join(f"{k}={v}" for k, v in filters.items() if v is not None) or "filtered"
    return f"filtered export ({shown}): each event's hash, and links between consecutive seqs"


def _summary(console: Console, path: Path, report: VerificationReport, *, pinned: bool) -> None:
    header = _header(path)
    table = Table(show_header=False, box=None, padding=(0, 2, 0, 0))
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    table.add_row("file", str(path))
    table.add_row("organization", str(header.get("org_id", "?")))
    table.add_row("exported at", str(header.get("exported_at", "?")))
    table.add_row("scope", _scope(header, report))
    span = f" (seq up to {report.last_seq})" if report.last_seq is not None else ""
    table.add_row("events verified", f"{report.events_checked}{span}")
    table.add_row("checkpoints read", str(report.checkpoints_checked))
    # Keys taken from the file prove nothing against whoever wrote the file: say so.
    table.add_row(
        "signing key",
        "pinned with --public-key"
        if pinned
        else "as listed in the file's header (pin it with --public-key for independent proof)",
    )
    revealed = header.get("content") == "revealed"
    if revealed:
        table.add_row(
            "content checked",
            f"{report.content_checked} revealed fields, each against what the chain sealed",
        )
    console.print(table)
    problem = report.problem
    if problem is None:
        console.print("[bold green]INTACT[/]: every hash, link and checkpoint signature holds.")
        if revealed:
            console.print("The revealed content is what the chain sealed, field by field.")
        if report.checkpoints_checked == 0:
            console.print(
                "No signed checkpoint in the file: this shows the file is consistent, not that "
                "it is what Blocks recorded."
            )
        return
    where = f"seq {problem.seq}" if problem.seq is not None else "no single event"
    # One plain line that names kind, seq and id, whatever the terminal width (scripts grep it).
    console.print(
        f"[bold red]TAMPERED[/]: {problem.kind} at {where}, event id {problem.id or '-'}",
        soft_wrap=True,
    )
    if problem.related_seq is not None:
        console.print(
            f"related: seq {problem.related_seq}, event id {problem.related_id}", soft_wrap=True
        )
    if problem.line is not None:
        console.print(f"line: {problem.line}")
    console.print(problem.message, soft_wrap=True, highlight=False)


@audit_app.command()
def verify(
    file: Annotated[
        Path,
        typer.Argument(exists=True, dir_okay=False, readable=True, help="a JSON Lines export"),
    ],
    public_key: Annotated[
        str | None,
        typer.Option(
            "--public-key",
            help="base64 raw Ed25519 key every checkpoint must verify with, instead of the keys "
            "the export's header lists (get it from GET /v1/audit/public-key, out of band)",
        ),
    ] = None,
    against: Annotated[
        list[Path] | None,
        typer.Option(
            "--against",
            exists=True,
            dir_okay=False,
            readable=True,
            help="checkpoints kept outside Blocks (the API's JSON for one, a list of them, or "
            "export checkpoint lines; an earlier export or a SIEM's copy of the events also "
            "names a rewritten event): the export must extend them; repeatable",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
) -> None:
    """Verify a JSON Lines audit export offline: exit 0 if intact (and consistent with every
    --against checkpoint), 1 if not, 2 if the input cannot be checked."""
    console = Console()
    if public_key is not None:
        try:
            if len(base64.b64decode(public_key, validate=True)) != 32:
                raise ValueError("not 32 bytes")
        except (binascii.Error, ValueError) as err:
            console.print(f"[red]--public-key is not a base64 Ed25519 public key: {err}[/]")
            raise typer.Exit(2) from err
    witnesses = _witnesses(console, against or [])
    with file.open("rb") as handle:
        report = verify_export(handle, public_key=public_key)
    consistency: ConsistencyReport | None = None
    if witnesses:
        checkpoints = [cp for w in witnesses for cp in w.checkpoints]
        copies = [w.chain for w in witnesses if w.chain]
        try:
            with file.open("rb") as handle:
                consistency = check_consistency(
                    handle, checkpoints, copies=copies, public_key=public_key
                )
        except UnusableInput as err:
            console.print(f"[red]The consistency check cannot run: {err}[/]", highlight=False)
            raise typer.Exit(2) from err
    if as_json:
        out = report.as_dict()
        if consistency is not None:
            out["consistency"] = consistency.as_dict()
        console.print_json(json.dumps(out))
    else:
        _summary(console, file, report, pinned=public_key is not None)
        if consistency is not None:
            _consistency_summary(console, consistency)
    consistent = consistency is None or consistency.ok
    raise typer.Exit(0 if report.ok and consistent else 1)


def _witnesses(console: Console, paths: list[Path]) -> list[Witness]:
    witnesses: list[Witness] = []
    for path in paths:
        try:
            witnesses.append(read_witness(path.read_text(encoding="utf-8"), str(path)))
        except (UnusableInput, UnicodeDecodeError) as err:
            console.print(f"[red]--against {path}: {err}[/]", highlight=False)
            raise typer.Exit(2) from err
    if paths and not any(w.checkpoints for w in witnesses):
        console.print("[red]--against: no signed checkpoint in the files given[/]")
        raise typer.Exit(2)
    return witnesses


def _consistency_summary(console: Console, report: ConsistencyReport) -> None:
    for w in report.witnesses:
        verdict = "[green]extended[/]" if w.matches else "[red]not matched[/]"
        console.print(f"witnessed seq {w.seq} signed at {w.signed_at}: {verdict}", soft_wrap=True)
    problem = report.problem
    if problem is None:
        console.print(
            "[bold green]CONSISTENT[/]: the chain recomputed from this export's events reaches "
            "every witnessed checkpoint's signed hash; this export extends them."
        )
        return
    where = f"seq {problem.seq}" if problem.seq is not None else "no single event"
    span = (
        f", first rewritten event in seqs {problem.first_seq} to {problem.last_seq}"
        if problem.first_seq is not None and problem.seq is None
        else ""
    )
    # One plain line, like TAMPERED's, that scripts grep.
    console.print(
        f"[bold red]INCONSISTENT[/]: {problem.kind} at {where}, event id {problem.id or '-'}{span}",
        soft_wrap=True,
    )
    console.print(problem.message, soft_wrap=True, highlight=False)
