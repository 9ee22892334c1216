"""The CSV form of the audit export: its columns, and its rows written as chunks to stream.

One row per line of the JSON Lines export, with these columns:

    type         "event" or "checkpoint"
    seq          the event's seq, or the seq a checkpoint certifies
    id           event id (empty for checkpoints)
    org_id       organization id
    occurred_at  ISO 8601, UTC, microseconds, exactly as hashed
    action, actor_type, actor_id, actor_email, target_type, target_id, run_id, outcome,
    reason, ip, user_agent
                 as stored; empty for null
    data         the event's data as JSON text (keys sorted)
    prev_hash    hash of the previous event in the chain (events)
    hash         the event's hash, or the chain hash a checkpoint certifies
    signed_at    when a checkpoint was signed (checkpoints)
    key_id       id of the key that signed it (checkpoints)
    signature    base64 Ed25519 signature (checkpoints)

Text cells that a spreadsheet would run as a formula (starting with = + - @ tab or CR) get a
leading apostrophe (OWASP CSV injection guidance), so CSV cells are not byte-exact: verify the
JSON Lines export.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping
from typing import Any

from blocks.core.audit.export_format import Link, SignedCheckpoint
from blocks.core.spreadsheet import defuse_formula

CSV_COLUMNS = (
    "type",
    "seq",
    "id",
    "org_id",
    "occurred_at",
    "action",
    "actor_type",
    "actor_id",
    "actor_email",
    "target_type",
    "target_id",
    "run_id",
    "outcome",
    "reason",
    "ip",
    "user_agent",
    "data",
    "prev_hash",
    "hash",
    "signed_at",
    "key_id",
    "signature",
)


def _cell(value: Any) -> str | int:
    if value is None:
        return ""
    if isinstance(value, int):
        return value
    return defuse_formula(str(value))


def _write(rows: Iterable[Iterable[str | int]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerows(rows)
    return buffer.getvalue()


def _row(kind: str, cells: Mapping[str, Any]) -> list[str | int]:
    return [kind, *(_cell(cells.get(column)) for column in CSV_COLUMNS[1:])]


def csv_header() -> str:
    return _write([CSV_COLUMNS])


def csv_event_rows(links: Iterable[Link]) -> str:
    return _write(
        _row(
            "event",
            {
                **payload,
                "data": json.dumps(payload["data"], ensure_ascii=False, sort_keys=True),
                "prev_hash": prev_hash,
                "hash": hash_,
            },
        )
        for payload, prev_hash, hash_ in links
    )


def csv_checkpoint_rows(checkpoints: Iterable[SignedCheckpoint]) -> str:
    return _write(_row("checkpoint", vars(checkpoint)) for checkpoint in checkpoints)
