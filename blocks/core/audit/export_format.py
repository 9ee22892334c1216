"""The audit export's JSON Lines format: its line types, writing them, and reading them back.

An export is one JSON object per line:

1. a header: ``{"type": "header", "format": "blocks.audit.export.v1", "org_id", "exported_at",
   "filters", "complete", "first_seq", "last_seq", "head": {"seq", "hash"} | null,
   "public_keys": {key_id: base64 raw Ed25519}}``;
2. one ``{"type": "event", <the hashed fields>, "prev_hash", "hash"}`` per event, in seq order;
   the hashed fields are exactly what ``models.audit.hashed_payload`` returns;
3. one ``{"type": "checkpoint", "org_id", "seq", "hash", "signed_at", "key_id", "signature"}``
   per signed checkpoint.

`audit_verify.verify_export` checks such a file. Imports only the standard library and
`blocks.core` (and `orjson` if it is there, for the writer's fast path), so an auditor can run it
with nothing else.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii
from typing import Any

from blocks.core.audit.checkpoints import CheckpointClaim
from blocks.core.audit.event_hash import MAX_SAFE_INT
from blocks.core.audit.sealed_content import ContentChecker

try:  # optional: `stored_event_lines` writes the same bytes several times faster with it
    import orjson
except ImportError:  # an auditor's machine without it: the standard library writes every line
    orjson = None  # type: ignore[assignment]

EXPORT_FORMAT = "blocks.audit.export.v1"

# (hashed payload, prev_hash, hash): the shape `audit_chain.first_broken_link` takes too.
Link = tuple[dict[str, Any], str, str]


@dataclass(frozen=True)
class SignedCheckpoint:
    """A checkpoint as exported; the signature covers `signed_at` in its UTC microsecond form."""

    org_id: str
    seq: int
    hash: str
    signed_at: str
    key_id: str
    signature: str

    def message(self) -> bytes:
        signed_at = datetime.fromisoformat(self.signed_at)
        if signed_at.tzinfo is None:
            raise ValueError("signed_at has no time zone")
        claim = CheckpointClaim(self.org_id, self.seq, self.hash, signed_at, self.key_id)
        return claim.message()

    def line(self) -> str:
        return dumps_line({"type": "checkpoint", **asdict(self)})


def format_signed_at(value: datetime) -> str:
    """The form `CheckpointClaim.message` signs, so the exported string round-trips exactly."""
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def signed_checkpoint(
    *, org_id: str, seq: int, hash_: str, signed_at: datetime, key_id: str, signature: str
) -> SignedCheckpoint:
    return SignedCheckpoint(org_id, seq, hash_, format_signed_at(signed_at), key_id, signature)


# ------------------------------------------------------------------------------ writing lines


def dumps_line(value: Mapping[str, Any]) -> str:
    # ASCII-only lines: a raw U+2028 or NEL in a value would split the line for readers that
    # break on every Unicode line separator (str.splitlines does).
    return json.dumps(value, separators=(",", ":"), allow_nan=False) + "\n"


def header_line(
    *,
    org_id: str,
    exported_at: datetime,
    filters: Mapping[str, str | None],
    complete: bool,
    first_seq: int | None,
    last_seq: int | None,
    head: tuple[int, str] | None,
    public_keys: Mapping[str, str],
    content: str | None = None,
) -> str:
    # `content: "revealed"`: each event with sealed run content is followed, after its batch, by
    # a `content` line (its fields in clear and the key that opens them) an auditor can check.
    revealed = {"content": content} if content is not None else {}
    return dumps_line(
        {
            "type": "header",
            "format": EXPORT_FORMAT,
            "org_id": org_id,
            "exported_at": exported_at.astimezone(UTC).isoformat(timespec="microseconds"),
            "filters": dict(filters),
            "complete": complete,
            "first_seq": first_seq,
            "last_seq": last_seq,
            "head": {"seq": head[0], "hash": head[1]} if head is not None else None,
            "public_keys": dict(public_keys),
            **revealed,
        }
    )


def event_line(payload: Mapping[str, Any], prev_hash: str, hash_: str) -> str:
    return dumps_line({"type": "event", **payload, "prev_hash": prev_hash, "hash": hash_})


# A stored event as `stored_event_lines` reads it, in this order: id and org_id as text, seq,
# occurred_at as hashed (UTC, microseconds, "+00:00"), action, actor_type, actor_id,
# actor_email, target_type, target_id, run_id, outcome, reason, ip, user_agent, data as JSON
# text (None for NULL), prev_hash, hash: `models.audit.events.hashed_payload`'s fields, as text.
StoredEvent = Sequence[Any]

# What `orjson` writes otherwise than `json.dumps`, looked for in its output line:
# - a float below 1e-4 ("0.00001" for "1e-05", "1.5e-7" for "1.5e-07"): "0.0000", or a negative
#   exponent closing a number (followed by ',' ']' or '}');
# - an integer beyond 64 bits, which `orjson.loads` reads as a float: such floats print with
#   "e+" (as every float from 1e16 up does in both).
# A string that merely looks like one of them only sends its line the slow way.
_SMALL_FLOAT = b"0.0000"
_NEGATIVE_EXPONENT = re.compile(rb"e-\d{1,3}[,\]}]")
_LARGE_FLOAT = b"e+"
# What `json.dumps` escapes (ensure_ascii) and `orjson` writes raw: DEL and all beyond ASCII.
_RAW = re.compile("[\x7f-\U0010ffff]+")


def _escape_raw(match: re.Match[str]) -> str:
    # The standard library's own escaping (surrogate pairs beyond the BMP), minus its quotes.
    return encode_basestring_ascii(match.group())[1:-1]


def stored_event_line(row: StoredEvent) -> str:
    """`event_line` of a stored event, by the standard library alone (the reference)."""
    payload = {
        "id": row[0],
        "org_id": row[1],
        "seq": row[2],
        "occurred_at": row[3],
        "action": row[4],
        "actor_type": row[5],
        "actor_id": row[6],
        "actor_email": row[7],
        "target_type": row[8],
        "target_id": row[9],
        "run_id": row[10],
        "outcome": row[11],
        "reason": row[12],
        "ip": row[13],
        "user_agent": row[14],
        "data": None if row[15] is None else json.loads(row[15]),
    }
    return event_line(payload, row[16], row[17])


def stored_event_lines(rows: Iterable[StoredEvent]) -> bytes:
    """The event lines of stored events, byte for byte what `stored_event_line` writes.

    `orjson` reads the data and writes each line in one call, which is what `json.dumps` writes
    but for what the patterns above find (that line goes the standard library's way) and for
    the characters the standard library escapes (DEL and all beyond ASCII), escaped afterwards
    by its own function. Tests compare both on varied events.
    """
    if orjson is None:
        return "".join(stored_event_line(row) for row in rows).encode("ascii")
    loads, dumps, refused = orjson.loads, orjson.dumps, (orjson.JSONDecodeError, TypeError)
    negative_exponent = _NEGATIVE_EXPONENT.search
    lines: list[bytes] = []
    for row in rows:
        (id_, org_id, seq, occurred_at, action, actor_type, actor_id, actor_email, target_type,
         target_id, run_id, outcome, reason, ip, user_agent, data, prev_hash, hash_) = row  # fmt: skip
        try:
            line = dumps(
                {
                    "type": "event",
                    "id": id_,
                    "org_id": org_id,
                    "seq": seq,
                    "occurred_at": occurred_at,
                    "action": action,
                    "actor_type": actor_type,
                    "actor_id": actor_id,
                    "actor_email": actor_email,
                    "target_type": target_type,
                    "target_id": target_id,
                    "run_id": run_id,
                    "outcome": outcome,
                    "reason": reason,
                    "ip": ip,
                    "user_agent": user_agent,
                    "data": None if data is None else loads(data),
                    "prev_hash": prev_hash,
                    "hash": hash_,
                }
            )
        except refused:  # what orjson will not take (nesting too deep, say): the slow way
            lines.append(stored_event_line(row)[:-1].encode("ascii"))
            continue
        if _SMALL_FLOAT in line or _LARGE_FLOAT in line or negative_exponent(line) is not None:
            line = stored_event_line(row)[:-1].encode("ascii")
        elif not line.isascii() or b"\x7f" in line:
            line = _RAW.sub(_escape_raw, line.decode()).encode("ascii")
        lines.append(line)
    lines.append(b"")
    return b"\n".join(lines)


# ------------------------------------------------------------------------------ reading lines


class UnreadableLine(Exception):
    """A line of an export that cannot be read; `line` is its number, from 1."""

    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


def _require(condition: bool, message: str, line: int) -> None:
    if not condition:
        raise UnreadableLine(message, line)


def parse_checkpoint(value: Mapping[str, Any], line: int = 0) -> SignedCheckpoint:
    fields = ("org_id", "seq", "hash", "signed_at", "key_id", "signature")
    _require(all(name in value for name in fields), "a checkpoint line lacks a field", line)
    _require(type(value["seq"]) is int, "a checkpoint's seq is not an integer", line)
    for name in ("org_id", "hash", "signed_at", "key_id", "signature"):
        _require(isinstance(value[name], str), f"a checkpoint's {name} is not a string", line)
    return SignedCheckpoint(**{name: value[name] for name in fields})


def parse_header(line: str | bytes, number: int) -> dict[str, Any]:
    """The header line as a dict whose fields have the types the format says."""
    try:
        header = json.loads(line)
    except ValueError as err:
        raise UnreadableLine("the first line is not JSON", number) from err
    _require(isinstance(header, dict) and header.get("type") == "header", "no header", number)
    _require(header.get("format") == EXPORT_FORMAT, f"the format is not {EXPORT_FORMAT}", number)
    _require(isinstance(header.get("org_id"), str), "the header has no org_id", number)
    _require(type(header.get("complete")) is bool, "the header has no complete flag", number)
    keys = header.get("public_keys", {})
    _require(
        isinstance(keys, dict) and all(isinstance(v, str) for v in keys.values()),
        "the header's public_keys is not an object of strings",
        number,
    )
    for name in ("first_seq", "last_seq"):
        _require(
            header.get(name) is None or type(header.get(name)) is int,
            f"the header's {name} is not an integer",
            number,
        )
    head = header.get("head")
    _require(
        head is None
        or (
            isinstance(head, dict)
            and type(head.get("seq")) is int
            and type(head.get("hash")) is str
        ),
        "the header's head is not {seq, hash}",
        number,
    )
    return header


class UncheckedPayload(dict[str, Any]):
    """An event's fields from a line the reader could not vouch for (see `read_links`):
    `plain_event_hash` hashes it the careful way."""


# An integer of this many characters or more may be beyond what RFC 8785 writes exactly.
_LONG_INTEGER = len(str(MAX_SAFE_INT))


def read_links(
    lines: Iterator[tuple[int, str | bytes]],
    on_checkpoint: Callable[[SignedCheckpoint], None],
    content: ContentChecker | None = None,
) -> Iterator[Link]:
    """The event lines after the header as links; checkpoint lines go to `on_checkpoint` as
    they pass.

    An event's payload is a `dict` only when its line is ASCII with no \\u escape (so no key
    sorts differently by UTF-16 unit, and no string holds a lone surrogate) and the parser met no
    float, no NaN or Infinity and no integer of 16 characters or more: then the fast encoder
    writes its RFC 8785 form, and `plain_event_hash` hashes it without looking at every value
    again. Any other payload is an `UncheckedPayload`.
    """
    risky: list[str] = []  # what the parser met on this line that the fast encoder must not take

    def parse_float(text: str) -> float:
        risky.append(text)
        return float(text)

    def parse_int(text: str) -> int:
        if len(text) >= _LONG_INTEGER:
            risky.append(text)
        return int(text)

    def parse_constant(name: str) -> float:
        risky.append(name)
        return float(name)

    # `json.loads` without its per-call set-up: the same values (the hooks return what the
    # defaults would), for a line with no leading whitespace; anything else goes to `loads`.
    scan = json.JSONDecoder(
        parse_float=parse_float, parse_int=parse_int, parse_constant=parse_constant
    ).scan_once
    loads = json.loads
    for number, line in lines:
        value: Any = None
        vouched = False
        if line.isascii():
            text = line if type(line) is str else line.decode("ascii")
            try:
                value, end = scan(text, 0)
            except (StopIteration, ValueError):
                value = None
            else:
                if end != len(text) and text[end:] != "\n" and text[end:].strip(" \t\n\r"):
                    value = None  # extra data after the object: `loads` says so below
                vouched = not risky and ("\\" not in text or "\\u" not in text)
            if risky:
                risky.clear()
        if value is None:
            vouched = False
            try:
                value = loads(line)
            except ValueError as err:
                if not line.strip():
                    continue
                raise UnreadableLine("not JSON", number) from err
        if type(value) is not dict:
            raise UnreadableLine("a line is not a JSON object", number)
        kind = value.pop("type", None)
        if kind == "event":
            prev_hash, stored = value.pop("prev_hash", None), value.pop("hash", None)
            if not (
                type(prev_hash) is str
                and type(stored) is str
                and type(value.get("seq")) is int
                and type(value.get("id")) is str
            ):
                raise UnreadableLine("an event line lacks seq, id, prev_hash or hash", number)
            if content is not None:
                content.event(value["id"], value.get("data"))
            yield (value if vouched else UncheckedPayload(value)), prev_hash, stored
        elif kind == "checkpoint":
            on_checkpoint(parse_checkpoint(value, number))
        elif kind == "content" and content is not None:
            content.content(value, number)
        else:
            raise UnreadableLine(f"unexpected line type {kind!r}", number)
