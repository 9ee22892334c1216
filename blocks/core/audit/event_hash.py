"""The verifier's fast path to an event's hash: the bytes of `audit_chain.chain_hash`, sooner."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from hashlib import sha256
from typing import Any

from blocks.core.audit.chain import canonical_json

# The largest integer RFC 8785 writes exactly (an IEEE 754 double's); also "no limit" for a seq.
MAX_SAFE_INT = 2**53 - 1
# Keys with one of these may sort differently by UTF-16 unit (RFC 8785) than by code point.
_UTF16_ORDER_RISK = re.compile("[\ud800-\U0010ffff]")
_FAST_ENCODE = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, sort_keys=True, separators=(",", ":"), check_circular=False
).encode


def _plain(payload: Mapping[str, Any]) -> bool:
    """True when `json.dumps(sort_keys=True)` writes exactly the RFC 8785 bytes of `payload`.

    The two encoders escape strings alike and write integers, booleans and null alike; they
    differ only on floats, integers beyond 2**53, and keys whose UTF-16 order is not their code
    point order. Anything else (floats, tuples, subclasses) goes the slow, reference way.
    """
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

    Same bytes as `chain_hash`, about four times faster on the events Blocks writes: the C JSON
    encoder produces the RFC 8785 form whenever `_plain` says it does (tested against `rfc8785`).
    """
    try:
        body = _FAST_ENCODE(payload).encode() if _plain(payload) else canonical_json(payload)
        return sha256(prev_hash.encode("ascii") + b"\n" + body).hexdigest()
    except (ValueError, TypeError):  # lone surrogates, NaN, huge integers, a non-ASCII prev_hash
        return None
