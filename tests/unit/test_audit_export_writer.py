"""The export's fast writer: `stored_event_lines` writes, byte for byte, the lines the standard
library writes (`event_line` of `hashed_payload`, what the export wrote before), for every kind of
value a stored event's data can hold: text beyond ASCII, DEL and control characters, floats of
every size (orjson writes those below 1e-4 differently), integers beyond 64 bits (orjson reads
them as floats), nesting, null data, and strings that look like the numbers it watches for.
"""

from __future__ import annotations

import json
import random
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from blocks.core.audit import export_format
from blocks.core.audit.export_format import event_line, stored_event_line, stored_event_lines
from blocks.models.audit.events import hashed_payload

pytest.importorskip("orjson")

ORG = uuid.UUID(int=0xE0F)
T0 = datetime(2026, 3, 2, 9, 0, 0, 120, tzinfo=UTC)
ALPHABET = 'aZ09 "\\/\n\t\x01\x1f\x7fé中\u2028\ue000\uffff😀'
LOOKALIKES = ["0.00001", "1e-7,", ":1e-5]", "e+12", "1" * 25, "x,0.00001}", "[1.5e-7"]
FLOATS = [0.5, 1.0, -0.0, 0.1, 86400.0, 1e-4, 9.99e-5, 1e-5, 1.5e-7, -2e-6, 1e-10, 5e-324, 1e16]
FLOATS += [1e21, 1.2345678901234567e17, 9007199254740993.0, 1.7976931348623157e308, -123.456]
INTEGERS = [0, -1, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1, 10**30]


def _text(rng: random.Random, most: int = 8) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randrange(most)))


def _value(rng: random.Random, depth: int = 0) -> Any:
    choice = rng.randrange(10 if depth < 3 else 7)
    if choice == 0:
        return rng.choice([None, True, False, rng.choice(LOOKALIKES)])
    if choice == 1:
        return rng.choice(INTEGERS) + rng.choice([0, 0, 1, -1])
    if choice == 2:
        return rng.randint(-1000, 1000)
    if choice == 3:
        return _text(rng)
    if choice == 4:
        return rng.choice(FLOATS) * rng.choice([1, -1])
    if choice == 5:
        return rng.uniform(-1e6, 1e6) * 10 ** rng.randint(-12, 20)
    if choice == 6:
        return rng.uniform(-1, 1)
    if choice in (7, 8):
        return {_text(rng, 4) or "k": _value(rng, depth + 1) for _ in range(rng.randrange(5))}
    return [_value(rng, depth + 1) for _ in range(rng.randrange(5))]


def _stored(rng: random.Random, seq: int, data: Any, data_json: str | None) -> dict[str, Any]:
    """One event as the table holds it (what `hashed_payload` reads), with its data's text."""
    return {
        "id": uuid.UUID(int=rng.getrandbits(128)),
        "org_id": ORG,
        "seq": seq,
        "occurred_at": T0 + timedelta(microseconds=rng.randrange(10**12)),
        "action": rng.choice(["step.decided", "run.started", "note.ünïcode"]),
        "actor_type": "user",
        "actor_id": rng.choice([None, str(uuid.UUID(int=seq))]),
        "actor_email": rng.choice([None, "v1:sealed+base64/=="]),
        "target_type": "step",
        "target_id": rng.choice(["approve", _text(rng)]),
        "run_id": str(uuid.UUID(int=seq + 7)),
        "outcome": "success",
        "reason": rng.choice([None, _text(rng), "Spesen für Mittagessen", "=1+2"]),
        "ip": rng.choice([None, "10.0.0.7", "::1"]),
        "user_agent": rng.choice([None, "Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101"]),
        "data": data,
        "data_json": data_json,
        "prev_hash": f"{seq - 1:064x}",
        "hash": f"{seq:064x}",
    }


def _as_read(event: dict[str, Any]) -> tuple[Any, ...]:
    """The row the export's query returns (`models.audit.reads._STORED_EVENT`)."""
    payload = hashed_payload(event)  # ids and the time written as the chain hashes them
    return (
        *(payload[name] for name in list(payload)[:-1]),
        event["data_json"],
        event["prev_hash"],
        event["hash"],
    )


def _before(event: dict[str, Any]) -> bytes:
    """What the export wrote before: the driver's json.loads of the data, `event_line`."""
    data = None if event["data_json"] is None else json.loads(event["data_json"])
    line = event_line(hashed_payload({**event, "data": data}), event["prev_hash"], event["hash"])
    return line.encode("ascii")


def _data_texts(data: Any) -> list[str]:
    """The data as PostgreSQL writes jsonb (", " and ": ", UTF-8 as is), and other JSON texts."""
    return [
        json.dumps(data, ensure_ascii=False),
        json.dumps(data, separators=(",", ":")),
    ]


def test_every_line_is_the_standard_librarys_byte_for_byte() -> None:
    rng = random.Random(20261202)
    events = []
    for seq in range(1, 3001):
        data = {_text(rng, 4) or "k": _value(rng) for _ in range(rng.randrange(1, 5))}
        for text in _data_texts(data):
            events.append(_stored(rng, seq, data, text))
    events.append(_stored(rng, 3001, None, None))  # NULL data
    events.append(_stored(rng, 3002, {}, "{}"))
    events.append(_stored(rng, 3003, [], "[]"))
    rows = [_as_read(event) for event in events]
    expected = b"".join(_before(event) for event in events)
    assert b"".join(stored_event_line(row).encode("ascii") for row in rows) == expected
    for start in range(0, len(rows), 997):  # the writer takes batches
        chunk = rows[start : start + 997]
        assert stored_event_lines(chunk) == b"".join(
            _before(e) for e in events[start : start + 997]
        )


@pytest.mark.parametrize("value", [*FLOATS, *INTEGERS, *LOOKALIKES])
def test_numbers_the_fast_encoder_writes_otherwise_go_the_slow_way(value: Any) -> None:
    event = _stored(random.Random(1), 1, None, json.dumps({"v": value, "w": [1, value]}))
    assert stored_event_lines([_as_read(event)]) == _before(event)


def test_characters_beyond_ascii_are_escaped_as_json_escapes_them() -> None:
    text = 'é中\u2028\x7f😀"\\\n\x01'
    event = _stored(random.Random(2), 1, None, json.dumps({"t": text}, ensure_ascii=False))
    event["reason"] = text
    line = stored_event_lines([_as_read(event)])
    assert line == _before(event)
    assert line.isascii()
    assert b"\\u00e9\\u4e2d\\u2028\\u007f\\ud83d\\ude00" in line
    assert json.loads(line)["data"]["t"] == text


def test_times_are_written_as_hashed_whatever_their_zone() -> None:
    event = _stored(random.Random(3), 1, None, "{}")
    event["occurred_at"] = datetime(2026, 3, 2, 10, 0, tzinfo=timezone(timedelta(hours=1)))
    row = _as_read(event)
    assert row[3] == "2026-03-02T09:00:00.000000+00:00"
    assert stored_event_lines([row]) == _before(event)


def test_without_orjson_the_standard_library_writes_every_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = random.Random(4)
    events = [_stored(rng, seq, None, json.dumps({"v": _value(rng)})) for seq in range(1, 200)]
    monkeypatch.setattr(export_format, "orjson", None)
    expected = b"".join(_before(event) for event in events)
    assert stored_event_lines([_as_read(event) for event in events]) == expected
