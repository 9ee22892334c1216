"""The audit export format (JSON Lines) and its verifier: hash chain, linkage and signed checkpoints.

An export is one JSON object per line:

1. a header: ``{"type": "header", "format": "blocks.audit.export.v1", "org_id", "exported_at",
   "filters", "complete", "first_seq", "last_seq", "head": {"seq", "hash"} | null,
   "public_keys": {key_id: base64 raw Ed25519}}``;
2. one ``{"type": "event", <the hashed fields>, "prev_hash", "hash"}`` per event, in seq order;
   the hashed fields are exactly what ``models.audit.hashed_payload`` returns;
3. one ``{"type": "checkpoint", "org_id", "seq", "hash", "signed_at", "key_id", "signature"}``
   per signed checkpoint.

The same `ChainVerifier` checks an export read offline and the live chain read from the database,
and names the first event that does not hold, with what went wrong: `changed`, `deleted`,
`inserted`, `reordered`, `bad_checkpoint` or `malformed`. Imports only the standard library,
`blocks.core` and `cryptography`, so an auditor can run it with nothing else.
"""

from __future__ import annotations

import base64
import json
import re
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from hashlib import sha256
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from blocks.core.audit_chain import GENESIS_HASH, canonical_json
from blocks.core.checkpoints import CheckpointClaim

EXPORT_FORMAT = "blocks.audit.export.v1"

ProblemKind = Literal["changed", "deleted", "inserted", "reordered", "bad_checkpoint", "malformed"]

# (hashed payload, prev_hash, hash): the shape `audit_chain.first_broken_link` takes too.
Link = tuple[dict[str, Any], str, str]

_SAFE_INT = 2**53 - 1
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
                if -_SAFE_INT <= value <= _SAFE_INT:
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


@dataclass(frozen=True)
class Problem:
    """The first thing that does not hold; `seq`/`id` name the event (None if there is none)."""

    kind: ProblemKind
    seq: int | None
    id: str | None
    message: str
    related_seq: int | None = None
    related_id: str | None = None
    line: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class VerificationReport:
    ok: bool
    events_checked: int
    checkpoints_checked: int
    problem: Problem | None
    complete: bool = True
    last_seq: int | None = None
    last_hash: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


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
) -> str:
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
        }
    )


def event_line(payload: Mapping[str, Any], prev_hash: str, hash_: str) -> str:
    return dumps_line({"type": "event", **payload, "prev_hash": prev_hash, "hash": hash_})


def _verify_signature(public_key_b64: str, message: bytes, signature_b64: str) -> bool:
    try:
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key_b64, validate=True))
        key.verify(base64.b64decode(signature_b64, validate=True), message)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def _name(link: Link) -> tuple[int | None, str | None]:
    payload = link[0]
    seq, id_ = payload.get("seq"), payload.get("id")
    return (seq if type(seq) is int else None), (id_ if isinstance(id_, str) else None)


def _at(seq: int | None) -> str:
    return f"seq {seq}" if seq is not None else "an event"


def _with_seq(link: Link, seq: int) -> str | None:
    """The hash the event would have if its seq were `seq` (to recognise a swapped seq)."""
    return event_hash(link[1], {**link[0], "seq": seq})


@dataclass
class _Suspect:
    """The first event that is not where the chain says it should be, being diagnosed.

    What happened is decided from what follows it: the event right after it (`next`), or the
    first later event that links to the last good one and fits the slot (`successor`).
    """

    event: Link
    own_ok: bool
    prev: Link | None  # the last event that held
    expected_prev: str | None  # the hash `event` should have linked to
    slot: int | None  # the seq `event` should have had
    wait: Literal["next", "successor"] = "successor"
    next: Link | None = None
    successor: Link | None = None


class ChainVerifier:
    """Checks one organization's chain, fed in seq order; reports the first problem.

    `complete` means every event from seq 1 is present (an unfiltered export, or the table). For
    a filtered export only each event's own hash and the links between consecutive seqs hold.
    `head` is the chain head recorded beside the events (the `audit_chain_heads` row), which
    catches events removed from or appended to the end. Feed checkpoints before or after the
    events; with `remember_hashes` off, only those fed before are matched against events.
    """

    def __init__(
        self,
        *,
        org_id: str | None,
        complete: bool,
        head: tuple[int, str] | None = None,
        first_seq: int | None = None,
        last_seq: int | None = None,
        public_keys: Mapping[str, str] | None = None,
        pinned_key: str | None = None,
        remember_hashes: bool = True,
    ) -> None:
        self._org_id = org_id
        self._complete = complete
        self._head = head
        self._public_keys = dict(public_keys or {})
        self._pinned_key = pinned_key
        self._remember = remember_hashes
        # The export's stated range only bounds a filtered export: a complete one starts at
        # genesis whatever its header says, and ends at the recorded head.
        self._first_seq = None if complete else first_seq
        self._last_seq = last_seq if not complete or head is None else head[0]
        limits = [s for s in (head[0] if head else None, self._last_seq) if s is not None]
        self._limit: int | None = min(limits) if limits else None

        self._count = 0
        self._last: Link | None = None
        self._last_hash: str | None = GENESIS_HASH if complete else None
        self._next_seq = 1  # complete exports only
        self._seqs: array[int] = array("q")  # filtered exports: the seqs seen, ascending
        self._digests = bytearray()  # 32 bytes per event seen, for checkpoints that come later
        self._awaiting: dict[int, list[SignedCheckpoint]] = {}

        self._suspect: _Suspect | None = None
        self._event_problem: Problem | None = None
        self._checkpoint_problem: Problem | None = None
        self._checkpoints = 0

    @property
    def settled(self) -> bool:
        """An event problem is known: events fed from now on cannot change the report."""
        return self._event_problem is not None

    # ----------------------------------------------------------------------------- events

    def feed(self, links: Iterable[Link]) -> None:
        it = iter(links)
        if self._event_problem is not None:
            return
        if self._suspect is not None:
            self._scan(it)
        elif self._complete:
            self._feed_complete(it)
        else:
            self._feed_filtered(it)

    def _feed_complete(self, it: Iterator[Link]) -> None:
        # The hot path: locals only, one canonicalization and one SHA-256 per event.
        expected, last_hash, last = self._next_seq, self._last_hash, self._last
        count, org_id, awaiting = self._count, self._org_id, self._awaiting
        limit = self._limit if self._limit is not None else _SAFE_INT
        digests = self._digests if self._remember else None
        hash_of = event_hash
        for link in it:
            payload, prev_hash, stored = link
            if (
                payload["seq"] == expected
                and prev_hash == last_hash
                and expected <= limit
                and (org_id is None or payload.get("org_id") == org_id)
                and hash_of(prev_hash, payload) == stored
            ):
                if digests is not None:
                    digests += bytes.fromhex(stored)
                expected, last_hash, last, count = expected + 1, stored, link, count + 1
                if awaiting and count in awaiting:
                    self._next_seq, self._last_hash, self._last, self._count = (
                        expected,
                        last_hash,
                        last,
                        count,
                    )
                    if not self._match_checkpoints(count, link):
                        return
                continue
            self._next_seq, self._last_hash, self._last, self._count = (
                expected,
                last_hash,
                last,
                count,
            )
            self._suspect_at(link, slot=expected, expected_prev=last_hash, rest=it)
            return
        self._next_seq, self._last_hash, self._last, self._count = expected, last_hash, last, count

    def _feed_filtered(self, it: Iterator[Link]) -> None:
        last, last_hash, count = self._last, self._last_hash, self._count
        last_seq: int | None = last[0]["seq"] if last is not None else None
        org_id, awaiting, seqs = self._org_id, self._awaiting, self._seqs
        limit = self._limit if self._limit is not None else _SAFE_INT
        first_seq = self._first_seq
        digests = self._digests if self._remember else None
        for link in it:
            payload, prev_hash, stored = link
            seq = payload["seq"]
            if last_seq is None:
                slot = 1 if seq == 1 else None
                expected_prev: str | None = GENESIS_HASH if seq == 1 else None
                in_order = type(seq) is int and seq >= 1 and (first_seq is None or seq == first_seq)
            else:
                slot = last_seq + 1 if seq == last_seq + 1 else None
                expected_prev = last_hash if slot is not None else None
                in_order = type(seq) is int and seq > last_seq
            if (
                in_order
                and seq <= limit
                and (expected_prev is None or prev_hash == expected_prev)
                and (org_id is None or payload.get("org_id") == org_id)
                and event_hash(prev_hash, payload) == stored
            ):
                seqs.append(seq)
                if digests is not None:
                    digests += bytes.fromhex(stored)
                last, last_seq, last_hash, count = link, seq, stored, count + 1
                if awaiting and seq in awaiting:
                    self._last, self._last_hash, self._count = last, last_hash, count
                    if not self._match_checkpoints(seq, link):
                        return
                continue
            self._last, self._last_hash, self._count = last, last_hash, count
            self._suspect_at(link, slot=slot, expected_prev=expected_prev, rest=it)
            return
        self._last, self._last_hash, self._count = last, last_hash, count

    def _suspect_at(
        self, link: Link, *, slot: int | None, expected_prev: str | None, rest: Iterator[Link]
    ) -> None:
        suspect = _Suspect(
            event=link,
            own_ok=event_hash(link[1], link[0]) == link[2],
            prev=self._last,
            expected_prev=expected_prev,
            slot=slot,
        )
        problem = self._at_once(suspect)
        if problem is not None:
            self._settle(problem)
            return
        self._suspect = suspect
        self._scan(rest)

    def _scan(self, it: Iterator[Link]) -> None:
        """Read on past the suspect until what happened is clear (at most to the end)."""
        s = self._suspect
        assert s is not None
        for link in it:
            if s.next is None:
                s.next = link
                if s.wait == "next":
                    self._settle(self._decide(s))
                    return
            if (
                s.wait == "successor"
                and s.slot is not None
                and link[1] == s.expected_prev
                and _with_seq(link, s.slot) == link[2]
            ):
                s.successor = link
                self._settle(self._decide(s))
                return

    def _settle(self, problem: Problem) -> None:
        self._suspect = None
        # A checkpoint read mid-stream may already have named an earlier event: it stands.
        if self._event_problem is None:
            self._event_problem = problem

    def _confirmed(self, link: Link, following: Link | None) -> bool:
        """Does the chain carry on from `link`: the next event, or else the head, links to it?"""
        if following is not None:
            return following[1] == link[2]
        return self._head is not None and self._head[1] == link[2]

    def _at_once(self, s: _Suspect) -> Problem | None:
        """What can be said of the suspect without reading on; else what to wait for."""
        x, prev = s.event, s.prev
        seq, id_ = _name(x)
        prev_seq, prev_id = _name(prev) if prev is not None else (None, None)
        org = x[0].get("org_id")

        if self._org_id is not None and org != self._org_id:
            if not s.own_ok:
                return self._changed(x, "its organization does not match its hash")
            return Problem(
                "inserted",
                seq,
                id_,
                f"event {_at(seq)} (id {id_}) belongs to organization {org}, not {self._org_id}",
            )
        if seq is None:
            return Problem("malformed", None, id_, f"event id {id_} has no integer seq")
        if self._limit is not None and seq > self._limit:
            return Problem(
                "inserted",
                seq,
                id_,
                f"event seq {seq} (id {id_}) lies beyond the chain's recorded end at seq "
                f"{self._limit}: it was added outside the append path",
            )
        if seq < 1 or (prev is None and self._first_seq is not None and seq < self._first_seq):
            return self._inserted(x, f"seq {seq} comes before the first seq of the chain or export")
        if prev is not None and prev_seq is not None and seq <= prev_seq:
            if seq < prev_seq:
                if self._complete or self._seen(seq):
                    return self._inserted(x, f"it repeats seq {seq}, which the chain already had")
                return Problem(
                    "reordered",
                    seq,
                    id_,
                    f"event seq {seq} (id {id_}) comes after seq {prev_seq} (id {prev_id})",
                    prev_seq,
                    prev_id,
                )
            if x[2] == prev[2]:
                return self._inserted(x, f"it repeats event seq {seq}")
            s.wait = "next"  # two events share a seq: the one the chain carries on from is real
            return None
        if s.slot is None:
            # A filtered export with no event right before this one: its own hash is all there is.
            if not s.own_ok:
                return self._changed(x, "its hash does not match its content")
            # Else the only rule left it broke: a first event after the header's first_seq.
            return Problem(
                "deleted",
                seq,
                id_,
                f"the export should start at seq {self._first_seq}, but its first event is seq "
                f"{seq} (id {id_})",
            )
        if seq == s.slot and not s.own_ok and x[1] == s.expected_prev:
            # Linked to the right event and the hash is wrong: its content was edited in place.
            return self._changed(x, "its hash does not match its content (a field was changed)")
        if (
            not s.own_ok
            and prev is not None
            and prev_seq is not None
            and x[1] == prev[1]
            and _with_seq(x, prev_seq) == x[2]
        ):
            # It really is the event of the previous seq, renumbered: that one was slipped in.
            return self._inserted(prev, f"event id {id_} holds seq {prev_seq} and was renumbered")
        s.wait = "successor"
        return None

    def _decide(self, s: _Suspect) -> Problem:
        """What the suspect is, given what was read after it (all of it, if no successor)."""
        x, prev = s.event, s.prev
        seq, id_ = _name(x)
        assert seq is not None
        prev_seq, prev_id = _name(prev) if prev is not None else (None, None)

        if s.wait == "next":
            assert prev is not None
            if s.own_ok and x[1] == prev[1] and self._confirmed(x, s.next):
                return self._inserted(
                    prev,
                    f"it shares seq {seq} with event id {id_}, which the chain carries on from",
                )
            return self._inserted(x, f"it repeats seq {seq}, already held by event id {prev_id}")

        assert s.slot is not None
        if s.successor is not None:
            y_seq, y_id = _name(s.successor)
            if seq > s.slot:
                return Problem(
                    "reordered",
                    seq,
                    id_,
                    f"event seq {seq} (id {id_}) is out of order: seq {y_seq} (id {y_id}) comes "
                    "later but belongs before it",
                    y_seq,
                    y_id,
                )
            if s.own_ok:
                return self._inserted(
                    x, f"seq {s.slot} belongs to event id {y_id}, which links to {_at(prev_seq)}"
                )
            if y_seq is not None and _with_seq(x, y_seq) == x[2]:
                return Problem(
                    "reordered",
                    seq,
                    id_,
                    f"events seq {seq} (id {id_}) and seq {y_seq} (id {y_id}) swapped places: "
                    "each one's hash holds only at the other's seq",
                    y_seq,
                    y_id,
                )
            return self._changed(x, "its hash does not match its content")

        if seq > s.slot:
            gap = f"seq {s.slot} is" if seq == s.slot + 1 else f"seqs {s.slot} to {seq - 1} are"
            after = f"seq {prev_seq} (id {prev_id})" if prev is not None else "the chain's start"
            return Problem(
                "deleted", seq, id_, f"{gap} missing: event seq {seq} (id {id_}) follows {after}"
            )
        if not s.own_ok:
            return self._changed(x, "its hash does not match its content")
        if self._confirmed(x, s.next):
            if prev is None:
                return self._changed(x, "it is first in the chain but does not start at genesis")
            return self._changed(
                prev,
                f"it is not the event seq {seq} (id {id_}) was chained to: it was changed and "
                "its hash recomputed, or events after it were removed",
            )
        return self._inserted(
            x, f"its hash holds but it does not link to {_at(prev_seq)}, and nothing links to it"
        )

    def _seen(self, seq: int) -> bool:
        index = bisect_left(self._seqs, seq)
        return index < len(self._seqs) and self._seqs[index] == seq

    @staticmethod
    def _changed(link: Link, why: str) -> Problem:
        seq, id_ = _name(link)
        return Problem("changed", seq, id_, f"event {_at(seq)} (id {id_}) was changed: {why}")

    @staticmethod
    def _inserted(link: Link, why: str) -> Problem:
        seq, id_ = _name(link)
        return Problem(
            "inserted", seq, id_, f"event {_at(seq)} (id {id_}) does not belong in the chain: {why}"
        )

    def malformed(self, message: str, *, line: int | None = None) -> None:
        """Input that cannot be read: reported unless an earlier event problem is known."""
        if self._event_problem is None:
            self._resolve_suspect()
        if self._event_problem is None:
            self._event_problem = Problem("malformed", None, None, message, line=line)

    def _resolve_suspect(self) -> None:
        if self._suspect is not None:
            self._settle(self._decide(self._suspect))

    # ------------------------------------------------------------------------ checkpoints

    def add_checkpoint(self, checkpoint: SignedCheckpoint) -> None:
        self._checkpoints += 1
        cp = checkpoint
        where = f"the checkpoint of seq {cp.seq} signed at {cp.signed_at} with key {cp.key_id!r}"
        key = self._pinned_key or self._public_keys.get(cp.key_id)
        bad: str | None = None
        if self._org_id is not None and cp.org_id != self._org_id:
            bad = f"{where} is for organization {cp.org_id}"
        elif key is None:
            bad = f"{where}: no public key with that id"
        else:
            try:
                message = cp.message()
            except (ValueError, TypeError):
                bad = f"{where}: signed_at is not an ISO 8601 time with a zone"
            else:
                if not _verify_signature(key, message, cp.signature):
                    bad = f"{where}: the signature does not verify"
                elif cp.seq < 0 or (cp.seq == 0 and cp.hash != GENESIS_HASH):
                    bad = f"{where} names no event of the chain"
        if bad is not None:
            if self._checkpoint_problem is None:
                self._checkpoint_problem = Problem("bad_checkpoint", cp.seq, None, bad)
            return
        if cp.seq == 0:
            return
        stored = self._stored_hash(cp.seq)
        if stored is None:
            self._awaiting.setdefault(cp.seq, []).append(cp)
        elif stored != cp.hash and self._event_problem is None:
            self._checkpoint_mismatch(cp)

    def _stored_hash(self, seq: int) -> str | None:
        """The hash of an event already verified, if it was remembered (the hot loops extend
        `_digests` and `_seqs` in place, so this holds while they run too)."""
        if self._complete:
            index = seq - 1
        else:
            index = bisect_left(self._seqs, seq)
            if index >= len(self._seqs) or self._seqs[index] != seq:
                return None
        if index < 0 or len(self._digests) < 32 * (index + 1):
            return None
        return self._digests[32 * index : 32 * (index + 1)].hex()

    def _match_checkpoints(self, seq: int, link: Link) -> bool:
        for cp in self._awaiting.pop(seq, []):
            if cp.hash != link[2]:
                self._checkpoint_mismatch(cp, link)
                return False
        return True

    def _checkpoint_mismatch(self, cp: SignedCheckpoint, link: Link | None = None) -> None:
        seq, id_ = _name(link) if link is not None else (cp.seq, None)
        self._event_problem = Problem(
            "changed",
            seq,
            id_,
            f"event seq {cp.seq}{f' (id {id_})' if id_ else ''} does not have the hash the "
            f"checkpoint signed at {cp.signed_at} certifies: it, or an event before it, was "
            "changed and the chain re-hashed",
        )

    # ----------------------------------------------------------------------------- report

    def finish(self) -> VerificationReport:
        self._resolve_suspect()
        if self._event_problem is None:
            self._event_problem = self._check_end()
        problem = self._event_problem or self._checkpoint_problem
        return VerificationReport(
            ok=problem is None,
            events_checked=self._count,
            checkpoints_checked=self._checkpoints,
            problem=problem,
            complete=self._complete,
            last_seq=_name(self._last)[0] if self._last is not None else None,
            last_hash=self._last[2] if self._last is not None else None,
        )

    def _check_end(self) -> Problem | None:
        """After the last event: did the chain end where the head and the checkpoints say?"""
        last_seq = (_name(self._last)[0] or 0) if self._last is not None else 0
        ends: list[tuple[int, str]] = []
        if self._last_seq is not None:
            ends.append((self._last_seq, "the export's header says it ends"))
        if self._complete:
            # A filtered export need not hold the head's event or a checkpoint's.
            if self._head is not None:
                ends.append((self._head[0], "the chain head is"))
            ends.extend(
                (seq, "a signed checkpoint certifies the chain reached") for seq in self._awaiting
            )
        for end, who in sorted(ends, reverse=True):
            if end > last_seq:
                return Problem(
                    "deleted",
                    last_seq + 1 if self._complete else end,
                    None,
                    f"{who} at seq {end}, but the last event is seq {last_seq}: events at the "
                    "end were removed",
                )
        head = self._head
        if (
            head is not None
            and head[0] == last_seq
            and head[1] != (self._last_hash or GENESIS_HASH)
        ):
            if self._last is None:
                return Problem(
                    "changed", None, None, "the chain head of an empty chain is not genesis"
                )
            return self._changed(
                self._last, "its hash is not the chain head's: it was changed and re-hashed"
            )
        return None


# ------------------------------------------------------------------------------ reading exports


class _Unreadable(Exception):
    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


def _require(condition: bool, message: str, line: int) -> None:
    if not condition:
        raise _Unreadable(message, line)


def parse_checkpoint(value: Mapping[str, Any], line: int = 0) -> SignedCheckpoint:
    fields = ("org_id", "seq", "hash", "signed_at", "key_id", "signature")
    _require(all(name in value for name in fields), "a checkpoint line lacks a field", line)
    _require(type(value["seq"]) is int, "a checkpoint's seq is not an integer", line)
    for name in ("org_id", "hash", "signed_at", "key_id", "signature"):
        _require(isinstance(value[name], str), f"a checkpoint's {name} is not a string", line)
    return SignedCheckpoint(**{name: value[name] for name in fields})


def _header(line: str | bytes, number: int) -> dict[str, Any]:
    try:
        header = json.loads(line)
    except ValueError as err:
        raise _Unreadable("the first line is not JSON", number) from err
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


def _links(lines: Iterator[tuple[int, str | bytes]], verifier: ChainVerifier) -> Iterator[Link]:
    """The event lines as links; checkpoint lines go to the verifier as they pass."""
    loads = json.loads
    for number, line in lines:
        try:
            value = loads(line)
        except ValueError as err:
            if not line.strip():
                continue
            raise _Unreadable("not JSON", number) from err
        _require(type(value) is dict, "a line is not a JSON object", number)
        kind = value.pop("type", None)
        if kind == "event":
            prev_hash, stored = value.pop("prev_hash", None), value.pop("hash", None)
            _require(
                type(prev_hash) is str
                and type(stored) is str
                and type(value.get("seq")) is int
                and type(value.get("id")) is str,
                "an event line lacks seq, id, prev_hash or hash",
                number,
            )
            yield value, prev_hash, stored
        elif kind == "checkpoint":
            verifier.add_checkpoint(parse_checkpoint(value, number))
        else:
            raise _Unreadable(f"unexpected line type {kind!r}", number)


def verify_export(
    lines: Iterable[str | bytes], *, public_key: str | None = None
) -> VerificationReport:
    """Verify an export, read line by line (a file object will do; it is read once).

    `public_key` (base64 raw Ed25519) pins the key every checkpoint must verify with, instead of
    trusting the keys the header lists.
    """
    numbered = ((number, line) for number, line in enumerate(lines, start=1))
    try:
        for number, line in numbered:
            if line.strip():
                header = _header(line, number)
                break
        else:
            raise _Unreadable("the export is empty", 1)
    except _Unreadable as err:
        return VerificationReport(
            False, 0, 0, Problem("malformed", None, None, err.message, line=err.line), False
        )
    head = header.get("head")
    verifier = ChainVerifier(
        org_id=header["org_id"],
        complete=header["complete"],
        head=(head["seq"], head["hash"]) if head else None,
        first_seq=header.get("first_seq"),
        last_seq=header.get("last_seq"),
        public_keys=header.get("public_keys") or {},
        pinned_key=public_key,
    )
    links = _links(numbered, verifier)
    try:
        verifier.feed(links)
        # Past a settled problem only checkpoints can still be read; events no longer matter.
        for _ in links:
            pass
    except _Unreadable as err:
        verifier.malformed(f"line {err.line}: {err.message}", line=err.line)
    except (KeyError, TypeError) as err:
        verifier.malformed(f"an event line could not be read: {err!r}")
    return verifier.finish()


def verify_rows(
    links: Iterable[Link],
    *,
    org_id: str | None,
    head: tuple[int, str] | None = None,
    checkpoints: Iterable[SignedCheckpoint] = (),
    public_keys: Mapping[str, str] | None = None,
    complete: bool = True,
) -> VerificationReport:
    """Verify links read from the database, (hashed_payload(row), prev_hash, hash) in seq order.

    For batches, use a `ChainVerifier` directly: feed the checkpoints, then each batch.
    """
    verifier = ChainVerifier(
        org_id=org_id,
        complete=complete,
        head=head,
        public_keys=public_keys,
        remember_hashes=False,
    )
    for checkpoint in checkpoints:
        verifier.add_checkpoint(checkpoint)
    verifier.feed(links)
    return verifier.finish()


def signed_checkpoint(
    *, org_id: str, seq: int, hash_: str, signed_at: datetime, key_id: str, signature: str
) -> SignedCheckpoint:
    return SignedCheckpoint(org_id, seq, hash_, format_signed_at(signed_at), key_id, signature)


__all__ = [
    "EXPORT_FORMAT",
    "ChainVerifier",
    "Link",
    "Problem",
    "ProblemKind",
    "SignedCheckpoint",
    "VerificationReport",
    "dumps_line",
    "event_hash",
    "event_line",
    "format_signed_at",
    "header_line",
    "parse_checkpoint",
    "signed_checkpoint",
    "verify_export",
    "verify_rows",
]
