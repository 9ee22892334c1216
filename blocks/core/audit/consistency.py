"""Does a later export extend checkpoints kept outside Blocks? The witness's consistency check.

A witness (or a SIEM) keeps signed checkpoints: "organization O's chain ended at seq N with hash
H". Given those and a later complete export, the check recomputes the export's hash chain from
its events alone, from genesis (never trusting a stored hash), and compares the hash at each
witnessed seq with the signed one. A superuser who rewrites an event and recomputes every later
hash leaves an export that verifies on its own, but cannot make the recomputed hash at a
witnessed seq come out as the signed one.

A checkpoint holds only a head, so a mismatch proves that something at or before its seq
changed, not what. The check narrows that down with every signed checkpoint it has (the
witness's and the export's own, whose signatures verify): the change lies after the last one
that still matches and at or before the first that does not. When that leaves one event, or
when the export's own stored chain first breaks inside that range, the event is named; else the
range is, for comparison with a copy of the events (a SIEM's). Imports only the standard library,
`blocks.core` and `cryptography`, so an auditor can run it with nothing else.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from blocks.core.audit.chain import GENESIS_HASH
from blocks.core.audit.chain_verifier import verify_signature
from blocks.core.audit.event_hash import event_hash, plain_event_hash
from blocks.core.audit.export_format import (
    SignedCheckpoint,
    UnreadableLine,
    parse_checkpoint,
    parse_header,
    read_links,
)

ConsistencyKind = Literal["bad_witness", "missing", "changed", "diverged"]
# What the hash of an event is taken to be when its payload cannot be hashed: never a real one.
_UNHASHABLE = "unhashable"
# Lines of an export a witness file may also hold (an earlier export kept outside): skipped.
_OTHER_LINES = frozenset({"header", "event", "content"})


class UnusableInput(ValueError):
    """The witness or the export cannot be checked at all (exit 2): unreadable, filtered, or of
    another organization."""


@dataclass(frozen=True)
class ConsistencyProblem:
    """The first thing that does not hold. `seq`/`id` name the event when one can be named;
    `first_seq`..`last_seq` is where the first rewritten event must lie."""

    kind: ConsistencyKind
    seq: int | None
    id: str | None
    message: str
    first_seq: int | None = None
    last_seq: int | None = None


@dataclass(frozen=True)
class WitnessResult:
    seq: int
    hash: str
    signed_at: str
    key_id: str
    matches: bool


@dataclass(frozen=True)
class ConsistencyReport:
    ok: bool
    events_read: int
    witnesses: list[WitnessResult] = field(default_factory=list)
    # Signed checkpoints inside the export that verified and were used as evidence.
    export_checkpoints_used: int = 0
    problem: ConsistencyProblem | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _checkpoint_of(value: Any, where: str) -> SignedCheckpoint:
    if not isinstance(value, dict):
        raise UnusableInput(f"{where} is not a JSON object")
    fields = {k: v for k, v in value.items() if k not in ("type", "id")}
    if value.get("type", "checkpoint") != "checkpoint":
        raise UnusableInput(f"{where} is not a checkpoint")
    try:
        return parse_checkpoint(fields)
    except UnreadableLine as err:
        raise UnusableInput(f"{where}: {err.message}") from err


@dataclass(frozen=True)
class Witness:
    """What a file kept outside Blocks holds: signed checkpoints, and, when it is a copy of the
    events too (an earlier export, a SIEM's), their hash chain recomputed from genesis (32 bytes
    per seq, up to its first gap), against which a rewritten event can be named."""

    checkpoints: list[SignedCheckpoint]
    chain: bytes = b""


def read_witness(text: str, source: str = "the witness") -> Witness:
    """A witness file: one JSON object (a checkpoint as the API returns it, or an export's
    checkpoint line), a JSON array of them, or JSON Lines of them; an earlier export (or a
    SIEM's copy in that format) will do, its events kept as a recomputed chain. Raises
    UnusableInput."""
    try:
        whole: Any = json.loads(text)
    except ValueError:
        values: list[Any] = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                values.append((json.loads(line), f"{source}, line {number}"))
            except ValueError as err:
                raise UnusableInput(f"{source}, line {number}, is not JSON") from err
    else:
        items = whole if isinstance(whole, list) else [whole]
        values = [(v, f"{source}, item {i}") for i, v in enumerate(items, start=1)]
    checkpoints: list[SignedCheckpoint] = []
    chain = bytearray()
    prev, gap = GENESIS_HASH, False
    for value, where in values:
        kind = value.get("type") if isinstance(value, dict) else None
        if kind == "event":
            payload = {k: v for k, v in value.items() if k not in ("type", "prev_hash", "hash")}
            if gap or payload.get("seq") != len(chain) // 32 + 1:
                gap = True  # only the events from seq 1 up to the first gap are of use
                continue
            recomputed = event_hash(prev, payload)
            if recomputed is None:
                gap = True
                continue
            chain += bytes.fromhex(recomputed)
            prev = recomputed
        elif kind not in _OTHER_LINES:
            checkpoints.append(_checkpoint_of(value, where))
    if not checkpoints and not chain:
        raise UnusableInput(f"{source} holds no checkpoint and no event")
    return Witness(checkpoints, bytes(chain))


def parse_witness(text: str, source: str = "the witness") -> list[SignedCheckpoint]:
    """The checkpoints of a witness file (`read_witness`); UnusableInput if it holds none."""
    checkpoints = read_witness(text, source).checkpoints
    if not checkpoints:
        raise UnusableInput(f"{source} holds no checkpoint")
    return checkpoints


class _Chain:
    """The export's events, read once: the hash chain recomputed from genesis, by position, and
    the first position where the chain the export stores departs from it."""

    def __init__(self) -> None:
        self.count = 0
        self.digests = bytearray()  # 32 bytes per event: the recomputed hash at seq count
        self._ids = bytearray()  # 16 bytes per event, when ids are UUIDs (Blocks' are)
        self._other_ids: dict[int, str] = {}
        self.first_break: int | None = None  # the first seq whose stored link or hash is wrong

    def add(self, payload: Mapping[str, Any], prev_hash: str, stored: str) -> None:
        seq = self.count + 1
        recomputed_prev = self.hash_at(seq - 1)
        recomputed = plain_event_hash(recomputed_prev, payload) or _UNHASHABLE
        if self.first_break is None and (
            payload.get("seq") != seq or prev_hash != recomputed_prev or stored != recomputed
        ):
            self.first_break = seq
        self.digests += bytes.fromhex(recomputed) if recomputed != _UNHASHABLE else bytes(32)
        id_ = payload.get("id")
        try:
            self._ids += uuid.UUID(str(id_)).bytes
        except ValueError:
            self._ids += bytes(16)
            self._other_ids[seq] = str(id_)
        self.count = seq

    def hash_at(self, seq: int) -> str:
        if seq == 0:
            return GENESIS_HASH
        return self.digests[32 * (seq - 1) : 32 * seq].hex()

    def id_at(self, seq: int) -> str:
        return self._other_ids.get(seq) or str(
            uuid.UUID(bytes=bytes(self._ids[16 * (seq - 1) : 16 * seq]))
        )


def check_consistency(
    lines: Iterable[str | bytes],
    witnessed: Iterable[SignedCheckpoint],
    *,
    copies: Iterable[bytes] = (),
    public_key: str | None = None,
) -> ConsistencyReport:
    """Does the export (read line by line, once) extend every witnessed checkpoint?

    Each checkpoint must verify with `public_key` (base64 raw Ed25519) when given, else with the
    key of its id the export's header lists. `copies` are chains recomputed from copies of the
    events kept outside (`Witness.chain`): one is trusted up to the last signed checkpoint it
    reaches, and names the first event the export holds otherwise. Raises UnusableInput for an
    export that cannot be read or is not complete, or a checkpoint of another organization.
    """
    numbered = enumerate(lines, start=1)
    in_export: list[SignedCheckpoint] = []
    chain = _Chain()
    try:
        header: dict[str, Any] | None = None
        for number, line in numbered:
            if line.strip():
                header = parse_header(line, number)
                break
        if header is None:
            raise UnusableInput("the export is empty")
        if not header["complete"]:
            raise UnusableInput(
                "the export is filtered: a consistency check needs every event from seq 1 "
                "(export without filters)"
            )
        for payload, prev_hash, stored in read_links(numbered, in_export.append):
            chain.add(payload, prev_hash, stored)
    except UnreadableLine as err:
        raise UnusableInput(f"the export, line {err.line}: {err.message}") from err
    except (KeyError, TypeError) as err:
        raise UnusableInput(f"an event line of the export could not be read: {err!r}") from err

    org_id, keys = header["org_id"], header.get("public_keys") or {}

    def verifies(cp: SignedCheckpoint) -> bool:
        key = public_key or keys.get(cp.key_id)
        try:
            message = cp.message()
        except (ValueError, TypeError):
            return False
        return key is not None and verify_signature(key, message, cp.signature)

    results: list[WitnessResult] = []
    signed: list[tuple[int, str]] = []  # (seq, hash) of every checkpoint whose signature holds
    evidence: list[tuple[int, bool]] = []  # (seq, does the recomputed chain match it?)
    missing: ConsistencyProblem | None = None
    bad: ConsistencyProblem | None = None
    for cp in sorted(witnessed, key=lambda c: c.seq):
        where = f"the witnessed checkpoint of seq {cp.seq} signed at {cp.signed_at}"
        if cp.org_id != org_id:
            raise UnusableInput(f"{where} is for organization {cp.org_id}, the export {org_id}")
        if cp.seq < 0 or (cp.seq == 0 and cp.hash != GENESIS_HASH) or not verifies(cp):
            bad = bad or ConsistencyProblem(
                "bad_witness",
                None,
                None,
                f"{where} does not verify with key {cp.key_id!r} "
                + ("given with --public-key" if public_key else "the export's header lists")
                + ": the witness copy, or the keys in the export, are not genuine",
            )
            continue
        if cp.seq > chain.count:
            results.append(WitnessResult(cp.seq, cp.hash, cp.signed_at, cp.key_id, False))
            missing = missing or ConsistencyProblem(
                "missing",
                None,
                None,
                f"{where} certifies the chain reached seq {cp.seq}, but the export ends at seq "
                f"{chain.count}: events were removed from the end",
                chain.count + 1,
                cp.seq,
            )
            continue
        signed.append((cp.seq, cp.hash))
        matches = chain.hash_at(cp.seq) == cp.hash
        results.append(WitnessResult(cp.seq, cp.hash, cp.signed_at, cp.key_id, matches))
        evidence.append((cp.seq, matches))
    diverged = not all(matches for _, matches in evidence)
    used = 0
    for cp in in_export:
        if cp.org_id == org_id and 0 <= cp.seq <= chain.count and verifies(cp):
            evidence.append((cp.seq, chain.hash_at(cp.seq) == cp.hash))
            signed.append((cp.seq, cp.hash))
            used += 1
    # A copy of the events is as good as the last signed checkpoint its own chain reaches.
    trusted = [
        (max((s for s, h in signed if copy[32 * (s - 1) : 32 * s].hex() == h), default=0), copy)
        for copy in copies
    ]
    # The earliest evidence first: a witnessed head the export no longer reaches.
    problem = _locate(chain, evidence, trusted) if diverged else missing or bad
    return ConsistencyReport(problem is None, chain.count, results, used, problem)


def _locate(
    chain: _Chain, evidence: list[tuple[int, bool]], copies: list[tuple[int, bytes]]
) -> ConsistencyProblem:
    """Where the first rewritten event lies, from every signed checkpoint known, named when the
    evidence leaves one event or a trusted copy of the events covers it."""
    hi = min(seq for seq, matches in evidence if not matches)
    lo = max((seq for seq, matches in evidence if matches and seq < hi), default=0)
    span = f"seqs {lo + 1} to {hi}" if hi > lo + 1 else f"seq {hi}"
    after = f"the checkpoint of seq {lo} still matches" if lo else "no checkpoint before it"
    head = (
        f"the chain recomputed from the export's events does not reach the hash signed for seq "
        f"{hi} ({after}): the first rewritten event lies in {span}"
    )
    for upto, copy in copies:
        if upto < hi:
            continue
        first = next(
            (
                s
                for s in range(lo + 1, hi + 1)
                if copy[32 * (s - 1) : 32 * s].hex() != chain.hash_at(s)
            ),
            hi,
        )
        id_ = chain.id_at(first)
        return ConsistencyProblem(
            "changed",
            first,
            id_,
            f"{head}; event seq {first} (id {id_}) is the first that differs from the copy kept "
            f"outside, whose events up to seq {upto} are those the checkpoint of seq {upto} signed",
            first,
            first,
        )
    broken = chain.first_break
    if broken is not None and lo < broken <= hi:
        id_ = chain.id_at(broken)
        exact = "" if broken == lo + 1 else " (or before it, if earlier hashes were recomputed too)"
        return ConsistencyProblem(
            "changed",
            broken,
            id_,
            f"{head}; event seq {broken} (id {id_}) is where the export's own chain first "
            f"breaks: it was changed{exact}",
            lo + 1,
            broken,
        )
    if hi == lo + 1:
        id_ = chain.id_at(hi)
        return ConsistencyProblem(
            "changed",
            hi,
            id_,
            f"{head}: event seq {hi} (id {id_}) is not the event that was witnessed, although "
            "every hash stored after it was recomputed to match",
            hi,
            hi,
        )
    return ConsistencyProblem(
        "diverged",
        None,
        None,
        f"{head}. The chain up to seq {hi} no longer matches the witnessed head, and the export "
        f"was re-hashed consistently, so a head alone cannot say which event: events {lo + 1} to "
        f"{hi} must be compared with the SIEM's copy (that copy, or an earlier export, given "
        "with --against, names the event)",
        lo + 1,
        hi,
    )
