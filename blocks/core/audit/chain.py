"""The audit hash chain: a canonical encoding of an event and the hash that links it to the last."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import rfc8785

GENESIS_HASH = "0" * 64


def canonical_json(value: Mapping[str, Any]) -> bytes:
    """RFC 8785 (JSON Canonicalization Scheme): one byte string per logical JSON value, so any
    verifier in any language recomputes the same hash."""
    return rfc8785.dumps(value)


def chain_hash(prev_hash: str, payload: Mapping[str, Any]) -> str:
    return hashlib.sha256(prev_hash.encode("ascii") + b"\n" + canonical_json(payload)).hexdigest()


def first_broken_link(
    events: list[tuple[dict[str, Any], str, str]], *, start_hash: str = GENESIS_HASH
) -> int | None:
    """Index of the first event whose link or hash does not hold, or None if the chain is whole.

    Each event is (hashed payload, prev_hash, hash), in sequence order.
    """
    expected_prev = start_hash
    for index, (payload, prev_hash, stored_hash) in enumerate(events):
        if prev_hash != expected_prev or chain_hash(prev_hash, payload) != stored_hash:
            return index
        expected_prev = stored_hash
    return None
