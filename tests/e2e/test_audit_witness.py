"""Witnessed checkpoints: a superuser's re-hashed rewrite passes `blocks audit verify`, but not
`blocks audit verify --against` the checkpoints (or copy of the events) kept outside Blocks."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from blocks.infra.embedded.postgres import PostgresCredentials
from tests.e2e.audit_tools import append, checkpoint, export, rewrite_and_rehash, verify
from tests.support import Stack, make_org


async def test_a_rehashed_rewrite_before_a_witnessed_checkpoint_is_caught(
    stack: Stack, engine: AsyncEngine, postgres: PostgresCredentials, tmp_path: Path
) -> None:
    org = await make_org(engine)
    await append(engine, org, "witness.a", "witness.b", "witness.c")
    first = await checkpoint(stack, org)
    await append(engine, org, "witness.target")
    second = await checkpoint(stack, org)
    assert second["seq"] == first["seq"] + 1  # signing appends nothing: one event in between
    await append(engine, org, "witness.d", "witness.e", "witness.f")
    last = await checkpoint(stack, org)
    # The witness keeps what it received, outside Blocks: every checkpoint, or just the latest.
    every = tmp_path / "witness-all.json"
    every.write_text(json.dumps([first, second, last]))
    latest = tmp_path / "witness-latest.json"
    latest.write_text(json.dumps(last))

    # An honest later export, with events after the checkpoints, extends them all.
    await append(engine, org, "witness.g", "witness.h")
    honest = await export(stack, org, tmp_path / "honest.jsonl")
    code, output = await verify(honest, "--against", str(every), "--against", str(latest))
    assert code == 0, output
    assert "CONSISTENT" in output
    assert "INCONSISTENT" not in output

    target = second["seq"]
    target_id = await rewrite_and_rehash(postgres, org, target)
    rewritten = await export(stack, org, tmp_path / "rewritten.jsonl")

    # What the issue measured: on its own the rewritten export holds together.
    code, output = await verify(rewritten)
    assert code == 0, output
    assert "INTACT" in output

    # Against the latest head alone: caught, but a head cannot say which event.
    code, output = await verify(rewritten, "--against", str(latest))
    assert code == 1, output
    assert (
        f"INCONSISTENT: diverged at no single event, event id -, first rewritten event in seqs "
        f"1 to {last['seq']}" in output
    ), output
    assert f"events 1 to {last['seq']} must be compared with the SIEM's copy" in output

    # With that head and a copy of the events kept outside (the earlier export, as a SIEM
    # would hold them), the rewritten event itself is named.
    code, output = await verify(rewritten, "--against", str(latest), "--against", str(honest))
    assert code == 1, output
    assert f"INCONSISTENT: changed at seq {target}, event id {target_id}" in output, output

    # Against every checkpoint the witness kept: the rewritten event itself is named.
    code, output = await verify(rewritten, "--against", str(every))
    assert code == 1, output
    assert f"INCONSISTENT: changed at seq {target}, event id {target_id}" in output, output
