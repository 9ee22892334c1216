"""The export reader's fast path: it hashes exactly what RFC 8785 hashes, and a forger cannot use it.

`read_links` hands the verifier a payload as a plain `dict` only when nothing in its line can be
written differently by the fast encoders than by RFC 8785; these tests hold the reader, every
encoder and the verifier to the reference (`chain_hash`, the `rfc8785` package).
"""

from __future__ import annotations

import contextlib
import json
import random
import uuid
from datetime import UTC, datetime
from hashlib import sha256
from typing import Any

import pytest
import rfc8785

try:
    import orjson
except ImportError:  # the standard library's encoder is tested alone
    orjson = None  # type: ignore[assignment]

from blocks.core.audit.chain import GENESIS_HASH, chain_hash
from blocks.core.audit.event_hash import (
    _plain,
    orjson_plain_body,
    plain_event_hash,
    stdlib_plain_body,
)
from blocks.core.audit.export_format import header_line, read_links
from blocks.core.audit.verify import verify_export

ORG = str(uuid.UUID(int=0xE0F))
PREV = "ab" * 32
# Strings that need escaping, and characters RFC 8785 writes raw: control characters, DEL, line
# separators, a private-use character and one beyond the BMP (sorted differently by UTF-16 unit).
ALPHABET = 'aZ09 "\\/\n\t\x01\x1f\x7fé中\u2028\ue000\uffff😀'


def _payload(seq: int, data: Any) -> dict[str, Any]:
    return {
        "id": str(uuid.UUID(int=seq)),
        "org_id": ORG,
        "seq": seq,
        "action": "step.decided",
        "reason": None,
        "data": data,
    }


def _text(rng: random.Random, most: int = 6) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randrange(most)))


def _value(rng: random.Random, depth: int = 0) -> Any:
    choice = rng.randrange(10 if depth < 3 else 7)
    if choice == 0:
        return rng.choice([None, True, False])
    if choice == 1:  # around every integer limit that matters: 15/16 digits, 2**53, 2**64
        edge = rng.choice([10**15, 2**53, 2**63, 2**64])
        return rng.choice([1, -1]) * (edge + rng.randint(-2, 2))
    if choice == 2:
        return rng.randint(-1000, 1000)
    if choice in (3, 4):
        return _text(rng)
    if choice == 5:
        return rng.choice([0.5, 1.0, -0.0, 1e21, 1e-7, 5e-324, float("nan"), float("inf")])
    if choice == 6:
        return rng.uniform(-1e6, 1e6)
    if choice in (7, 8):
        return {_text(rng, 4) or "k": _value(rng, depth + 1) for _ in range(rng.randrange(4))}
    return [_value(rng, depth + 1) for _ in range(rng.randrange(4))]


def _reference(prev_hash: str, payload: dict[str, Any]) -> str | None:
    try:
        return chain_hash(prev_hash, payload)
    except ValueError:  # what RFC 8785 refuses (NaN, huge integers, lone surrogates) has no hash
        return None


def _line(payload: dict[str, Any], prev_hash: str, stored: str) -> str:
    """`event_line`, and NaN too (a file can hold what Blocks does not write)."""
    event = {"type": "event", **payload, "prev_hash": prev_hash, "hash": stored}
    return json.dumps(event, separators=(",", ":")) + "\n"


def _line_forms(payload: dict[str, Any], stored: str) -> list[str | bytes]:
    event = {"type": "event", **payload, "prev_hash": PREV, "hash": stored}
    exported = _line(payload, PREV, stored)
    raw = json.dumps(event, ensure_ascii=False) + "\n"  # UTF-8 as is, spaces after separators
    return [exported, exported.encode(), raw, raw.encode(), "  " + exported.rstrip("\n")]


def _read_one(line: str | bytes) -> tuple[dict[str, Any], str, str]:
    [link] = list(read_links(iter([(2, line)]), lambda _checkpoint: None))
    return link


# ----------------------------------------------------------------------------------- encoders


def test_every_encoder_writes_the_rfc8785_bytes_of_a_plain_payload() -> None:
    pytest.importorskip("orjson")
    rng = random.Random(8785)
    checked = 0
    while checked < 1000:
        payload = _payload(1, {_text(rng, 4) or "k": _value(rng) for _ in range(3)})
        if _plain(payload):
            expected = rfc8785.dumps(payload)
            assert stdlib_plain_body(payload) == expected, payload
            assert orjson_plain_body(payload) == expected, payload
            checked += 1


def test_a_lone_surrogate_or_a_non_ascii_prev_hash_has_no_hash_on_any_path() -> None:
    assert plain_event_hash(GENESIS_HASH, _payload(1, {"lone": "\ud800"})) is None
    assert plain_event_hash("é" * 64, _payload(1, {})) is None


# ------------------------------------------------------------------------------------- reader


def test_the_reader_hashes_every_line_as_the_reference_does() -> None:
    rng = random.Random(20261124)
    for _ in range(1500):
        payload = _payload(rng.randint(1, 10**6), {"v": _value(rng)})
        expected = _reference(PREV, payload)
        for line in _line_forms(payload, expected or "0" * 64):
            parsed = json.loads(line)
            read, prev_hash, stored = _read_one(line)
            assert (prev_hash, stored) == (parsed.pop("prev_hash"), parsed.pop("hash"))
            parsed.pop("type")
            assert repr(read) == repr(parsed)  # repr: NaN is not equal to itself
            assert plain_event_hash(prev_hash, read) == _reference(prev_hash, parsed), line


# Payloads whose plain JSON (sorted keys, Python's numbers) is not their RFC 8785 form, or that
# RFC 8785 refuses: a hash over the plain bytes must not verify.
NOT_PLAIN = [
    {"x": 1.0},
    {"x": 1e16},
    {"x": 1e-7},
    {"x": [2.0]},
    {"x": 2**53},
    {"x": -(2**53)},
    {"x": 2**64 + 1},
    {"x": float("nan")},
    {"x": [float("-inf")]},
    {"\U0001f600": 1, "\ue000": 2},
]


def _export(payload: dict[str, Any], stored: str) -> list[str]:
    header = header_line(
        org_id=ORG,
        exported_at=datetime.now(UTC),
        filters={},
        complete=True,
        first_seq=1,
        last_seq=1,
        head=(1, stored),
        public_keys={},
    )
    return [header, _line(payload, GENESIS_HASH, stored)]


def _fast_but_wrong(payload: dict[str, Any]) -> list[bytes]:
    """What the fast encoders would write if nothing kept `payload` from them."""
    plain = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    bodies = [plain.encode()]
    if orjson is not None:  # it writes NaN and Infinity as null, and floats its own way
        with contextlib.suppress(orjson.JSONEncodeError):  # an integer beyond 64 bits
            bodies.append(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS))
    reference = _reference(GENESIS_HASH, payload)
    return [b for b in bodies if sha256(GENESIS_HASH.encode() + b"\n" + b).hexdigest() != reference]


@pytest.mark.parametrize("data", NOT_PLAIN)
def test_a_hash_over_bytes_that_are_not_rfc8785_does_not_verify(data: dict[str, Any]) -> None:
    payload = _payload(1, data)
    assert _fast_but_wrong(payload)
    for body in _fast_but_wrong(payload):
        forged = sha256(GENESIS_HASH.encode() + b"\n" + body).hexdigest()
        lines = _export(payload, forged)
        for read in (lines, [line.encode() for line in lines]):
            report = verify_export(read)
            assert report.problem is not None, body
            assert (report.problem.kind, report.problem.seq) == ("changed", 1), report.problem
    honest = _reference(GENESIS_HASH, payload)
    if honest is not None:
        assert verify_export(_export(payload, honest)).ok


def test_a_changed_field_is_caught_on_both_paths() -> None:
    # é is exported as \u00e9, so its line goes the careful way; the other the fast way.
    for comment in ("within budget", "café"):
        payload = _payload(1, {"comment": comment})
        lines = _export(payload, chain_hash(GENESIS_HASH, payload))
        assert verify_export(lines).ok
        assert verify_export([line.encode() for line in lines]).ok
        tampered = [lines[0], lines[1].replace("budget" if "budget" in comment else "caf", "x")]
        report = verify_export(tampered)
        assert report.problem is not None
        assert (report.problem.kind, report.problem.seq) == ("changed", 1)
