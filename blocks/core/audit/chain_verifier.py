"""The chain verifier: events fed in seq order and signed checkpoints in, one report out.

The same `ChainVerifier` checks an export read offline and the live chain read from the database
(`audit_verify` has the entry points for both). It checks each event's own hash and its link to
the one before, and for a complete chain the gaps, the order and the recorded head; it matches
signed checkpoints against the events they certify. At the first event that does not hold it
hands over to `audit_diagnosis`, which names that event and what happened to it. Imports only the
standard library, `blocks.core` and `cryptography`, so an auditor can run it with nothing else.
"""

from __future__ import annotations

import base64
from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from blocks.core.audit.chain import GENESIS_HASH
from blocks.core.audit.diagnosis import (
    ChainBounds,
    Problem,
    Suspect,
    changed,
    diagnose,
    diagnose_at_once,
    name_of,
)
from blocks.core.audit.event_hash import MAX_SAFE_INT, event_hash
from blocks.core.audit.export_format import Link, SignedCheckpoint


@dataclass(frozen=True)
class VerificationReport:
    ok: bool
    events_checked: int
    checkpoints_checked: int
    problem: Problem | None
    complete: bool = True
    last_seq: int | None = None
    last_hash: str | None = None
    # Sealed content fields checked against an export's revealed content (0 when not revealed).
    content_checked: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def verify_signature(public_key_b64: str, message: bytes, signature_b64: str) -> bool:
    try:
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key_b64, validate=True))
        key.verify(base64.b64decode(signature_b64, validate=True), message)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


class ChainVerifier:
    """Checks one organization's chain, fed in seq order; reports the first problem.

    `complete` means every event from seq 1 is present (an unfiltered export, or the table). For
    a filtered export only each event's own hash and the links between consecutive seqs hold.
    `head` is the chain head recorded beside the events (the `audit_chain_heads` row), which
    catches events removed from or appended to the end. Feed checkpoints before or after the
    events; with `remember_hashes` off, only those fed before are matched against events.
    `hash_of` is `event_hash` or a faster equal for the links fed (`plain_event_hash`).
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
        hash_of: Callable[[str, Mapping[str, Any]], str | None] = event_hash,
    ) -> None:
        self._bounds = ChainBounds.of(
            org_id=org_id, complete=complete, head=head, first_seq=first_seq, last_seq=last_seq
        )
        self._public_keys = dict(public_keys or {})
        self._pinned_key = pinned_key
        self._remember = remember_hashes
        self._hash_of = hash_of

        self._count = 0
        self._last: Link | None = None
        self._last_hash: str | None = GENESIS_HASH if complete else None
        self._next_seq = 1  # complete exports only
        self._seqs: array[int] = array("q")  # filtered exports: the seqs seen, ascending
        self._digests = bytearray()  # 32 bytes per event seen, for checkpoints that come later
        self._awaiting: dict[int, list[SignedCheckpoint]] = {}

        self._suspect: Suspect | None = None
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
        elif self._bounds.complete:
            self._feed_complete(it)
        else:
            self._feed_filtered(it)

    def _feed_complete(self, it: Iterator[Link]) -> None:
        # The hot path: locals only, one canonicalization and one SHA-256 per event.
        expected, last_hash, last = self._next_seq, self._last_hash, self._last
        count, org_id, awaiting = self._count, self._bounds.org_id, self._awaiting
        limit = self._bounds.limit if self._bounds.limit is not None else MAX_SAFE_INT
        digests = self._digests if self._remember else None
        hash_of = self._hash_of
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
        org_id, awaiting, seqs = self._bounds.org_id, self._awaiting, self._seqs
        limit = self._bounds.limit if self._bounds.limit is not None else MAX_SAFE_INT
        first_seq = self._bounds.first_seq
        digests = self._digests if self._remember else None
        hash_of = self._hash_of
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
                and hash_of(prev_hash, payload) == stored
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
        suspect = Suspect(
            event=link,
            own_ok=self._hash_of(link[1], link[0]) == link[2],
            prev=self._last,
            expected_prev=expected_prev,
            slot=slot,
        )
        problem = diagnose_at_once(suspect, self._bounds, self._seen)
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
            if s.observe(link):
                self._settle(diagnose(s, self._bounds))
                return

    def _settle(self, problem: Problem) -> None:
        self._suspect = None
        # A checkpoint read mid-stream may already have named an earlier event: it stands.
        if self._event_problem is None:
            self._event_problem = problem

    def _seen(self, seq: int) -> bool:
        index = bisect_left(self._seqs, seq)
        return index < len(self._seqs) and self._seqs[index] == seq

    def malformed(self, message: str, *, line: int | None = None) -> None:
        """Input that cannot be read: reported unless an earlier event problem is known."""
        if self._event_problem is None:
            self._resolve_suspect()
        if self._event_problem is None:
            self._event_problem = Problem("malformed", None, None, message, line=line)

    def _resolve_suspect(self) -> None:
        if self._suspect is not None:
            self._settle(diagnose(self._suspect, self._bounds))

    # ------------------------------------------------------------------------ checkpoints

    def add_checkpoint(self, checkpoint: SignedCheckpoint) -> None:
        self._checkpoints += 1
        cp = checkpoint
        where = f"the checkpoint of seq {cp.seq} signed at {cp.signed_at} with key {cp.key_id!r}"
        key = self._pinned_key or self._public_keys.get(cp.key_id)
        bad: str | None = None
        if self._bounds.org_id is not None and cp.org_id != self._bounds.org_id:
            bad = f"{where} is for organization {cp.org_id}"
        elif key is None:
            bad = f"{where}: no public key with that id"
        else:
            try:
                message = cp.message()
            except (ValueError, TypeError):
                bad = f"{where}: signed_at is not an ISO 8601 time with a zone"
            else:
                if not verify_signature(key, message, cp.signature):
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
        if self._bounds.complete:
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
        seq, id_ = name_of(link) if link is not None else (cp.seq, None)
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
            complete=self._bounds.complete,
            last_seq=name_of(self._last)[0] if self._last is not None else None,
            last_hash=self._last[2] if self._last is not None else None,
        )

    def _check_end(self) -> Problem | None:
        """After the last event: did the chain end where the head and the checkpoints say?"""
        bounds = self._bounds
        last_seq = (name_of(self._last)[0] or 0) if self._last is not None else 0
        ends: list[tuple[int, str]] = []
        if bounds.last_seq is not None:
            ends.append((bounds.last_seq, "the export's header says it ends"))
        if bounds.complete:
            # A filtered export need not hold the head's event or a checkpoint's.
            if bounds.head is not None:
                ends.append((bounds.head[0], "the chain head is"))
            ends.extend(
                (seq, "a signed checkpoint certifies the chain reached") for seq in self._awaiting
            )
        for end, who in sorted(ends, reverse=True):
            if end > last_seq:
                return Problem(
                    "deleted",
                    last_seq + 1 if bounds.complete else end,
                    None,
                    f"{who} at seq {end}, but the last event is seq {last_seq}: events at the "
                    "end were removed",
                )
        head = bounds.head
        if (
            head is not None
            and head[0] == last_seq
            and head[1] != (self._last_hash or GENESIS_HASH)
        ):
            if self._last is None:
                return Problem(
                    "changed", None, None, "the chain head of an empty chain is not genesis"
                )
            return changed(
                self._last, "its hash is not the chain head's: it was changed and re-hashed"
            )
        return None
