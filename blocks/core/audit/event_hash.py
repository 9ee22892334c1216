"""The verifier's fast path to an event's hash: the bytes of `audit_chain.chain_hash`, sooner.

RFC 8785 and a JSON encoder that sorts keys and escapes no more than it must write the same bytes
for a "plain" payload (`_plain`): strings, safe integers, booleans, null, lists and dicts, keys in
the same order by code point as by UTF-16 unit. For those, `orjson` writes them when it is
installed, else the standard library's C encoder does; anything else goes through `rfc8785`.
Either way the bytes are those of `chain_hash` (tests compare all three encoders).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from hashlib import sha256
from json.encoder import c_make_encoder, encode_basestring
from typing import Any

from blocks.core.audit.chain import canonical_json

try:  # optional: writes the same bytes several times faster than the standard library
    import orjson
except ImportError:  # not installed: the standard library writes the same bytes, slower
    orjson = None  # type: ignore[assignment]

# The largest integer RFC 8785 writes exactly (an IEEE 754 double's); also "no limit" for a seq.
MAX_SAFE_INT = 2**53 - 1
# Keys with one of these may sort differently by UTF-16 unit (RFC 8785) than by code point.
_UTF16_ORDER_RISK = re.compile("[\ud800-\U0010ffff]")
_SLOW_ENCODE = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, sort_keys=True, separators=(",", ":"), check_circular=False
).iterencode


def _chunks_encoder() -> Callable[[Any, int], Iterable[str]]:
    """What `_SLOW_ENCODE` writes, from the C encoder that `json.dumps` builds again on every
    call (a tenth of the time it takes on an event)."""

    def slow(value: Any, _level: int) -> Iterable[str]:
        return _SLOW_ENCODE(value)

    if c_make_encoder is None:  # a Python without the `_json` accelerator
        return slow
    try:
        # markers, default, str encoder, indent, key and item separators, sort_keys, skipkeys,
        # allow_nan: what `JSONEncoder.iterencode` passes for the options above.
        return c_make_encoder(None, None, encode_basestring, None, ":", ",", True, False, False)
    except TypeError:  # a Python whose private encoder takes other arguments
        return slow


_CHUNKS = _chunks_encoder()


def stdlib_plain_body(payload: dict[str, Any]) -> bytes:
    """The RFC 8785 bytes of a plain payload, by the standard library alone."""
    return "".join(_CHUNKS(payload, 0)).encode()


def orjson_plain_body(payload: dict[str, Any]) -> bytes:
    """The same bytes by `orjson`; what it refuses (a lone surrogate, nesting deeper than it
    goes) is left to the standard library, so the outcome is the same."""
    try:
        return orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:
        return stdlib_plain_body(payload)


_plain_body = stdlib_plain_body if orjson is None else orjson_plain_body


def _plain(payload: Mapping[str, Any]) -> bool:
    """True when `json.dumps(sort_keys=True)` writes exactly the RFC 8785 bytes of `payload`.

    The two encoders escape strings alike and write integers, booleans and null alike; they
    differ only on floats, integers beyond 2**53, and keys whose UTF-16 order is not their code
    point order. Anything else (floats, tuples, subclasses, a mapping that is not a dict) goes
    the slow, reference way.
    """
    if type(payload) is not dict:
        return False
    stack: list[Any] = [payload]
    while stack:
        node = stack.pop()
        if type(node) is dict:
            for key in node:
                if type(key) is not str or (not key.isascii() and _UTF16_ORDER_RISK.search(key)):
                    return False
            values: Iterable[Any] = node.values()
        else:
            values = node
        for value in values:
            kind = type(value)
            if kind is str or value is None or kind is bool:
                continue
            if kind is int:
                if -MAX_SAFE_INT <= value <= MAX_SAFE_INT:
                    continue
                return False
            if kind is dict or kind is list:
                stack.append(value)
                continue
            return False
    return True


def event_hash(prev_hash: str, payload: Mapping[str, Any]) -> str | None:
    """`audit_chain.chain_hash(prev_hash, payload)`, or None when the payload cannot be hashed.

    Same bytes as `chain_hash`, several times faster on the events Blocks writes: a C encoder
    produces the RFC 8785 form whenever `_plain` says it does (tested against `rfc8785`).
    """
    if _plain(payload):
        return plain_event_hash(prev_hash, payload)
    try:
        return sha256(prev_hash.encode("ascii") + b"\n" + canonical_json(payload)).hexdigest()
    except (ValueError, TypeError):  # lone surrogates, NaN, huge integers, a non-ASCII prev_hash
        return None


def plain_event_hash(prev_hash: str, payload: Mapping[str, Any]) -> str | None:
    """`event_hash`, taking a payload of type `dict` as plain (`_plain` would say True) without
    looking: only for callers that know it, as the export reader knows of the lines it parsed
    (`export_format.read_links`). Any other mapping goes the careful way."""
    if type(payload) is not dict:
        return event_hash(prev_hash, dict(payload))
    try:
        return sha256(prev_hash.encode("ascii") + b"\n" + _plain_body(payload)).hexdigest()
    except (ValueError, TypeError):  # a lone surrogate, a non-ASCII prev_hash
        return None
