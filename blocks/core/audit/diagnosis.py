"""Naming what went wrong at the first event of a chain that does not hold, and which event it was.

The verifier (`audit_chain_verifier`) stops at the first event that is not where the chain says
it should be: the `Suspect`. What happened to it is `changed`, `deleted`, `inserted` or
`reordered`, told apart by what is known at once (`diagnose_at_once`) or, failing that, by the
events read after it (`Suspect.observe`, then `diagnose`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

from blocks.core.audit.event_hash import event_hash
from blocks.core.audit.export_format import Link

ProblemKind = Literal[
    "changed", "deleted", "inserted", "reordered", "bad_checkpoint", "malformed", "content_mismatch"
]


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
class ChainBounds:
    """What is known of a chain before its events are read: whose it is and where it ends.

    `complete` means every event from seq 1 is present. `head` is the chain head recorded beside
    the events; `first_seq`/`last_seq` the range a filtered export states; `limit` the highest
    seq an event may have.
    """

    org_id: str | None
    complete: bool
    head: tuple[int, str] | None
    first_seq: int | None
    last_seq: int | None
    limit: int | None

    @classmethod
    def of(
        cls,
        *,
        org_id: str | None,
        complete: bool,
        head: tuple[int, str] | None,
        first_seq: int | None,
        last_seq: int | None,
    ) -> ChainBounds:
        # The export's stated range only bounds a filtered export: a complete one starts at
        # genesis whatever its header says, and ends at the recorded head.
        first = None if complete else first_seq
        last = last_seq if not complete or head is None else head[0]
        limits = [s for s in (head[0] if head else None, last) if s is not None]
        return cls(org_id, complete, head, first, last, min(limits) if limits else None)


def name_of(link: Link) -> tuple[int | None, str | None]:
    """The event's seq and id, each None when it is not of the right type."""
    payload = link[0]
    seq, id_ = payload.get("seq"), payload.get("id")
    return (seq if type(seq) is int else None), (id_ if isinstance(id_, str) else None)


def _at(seq: int | None) -> str:
    return f"seq {seq}" if seq is not None else "an event"


def _with_seq(link: Link, seq: int) -> str | None:
    """The hash the event would have if its seq were `seq` (to recognise a swapped seq)."""
    return event_hash(link[1], {**link[0], "seq": seq})


def changed(link: Link, why: str) -> Problem:
    seq, id_ = name_of(link)
    return Problem("changed", seq, id_, f"event {_at(seq)} (id {id_}) was changed: {why}")


def inserted(link: Link, why: str) -> Problem:
    seq, id_ = name_of(link)
    return Problem(
        "inserted", seq, id_, f"event {_at(seq)} (id {id_}) does not belong in the chain: {why}"
    )


@dataclass
class Suspect:
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

    def observe(self, link: Link) -> bool:
        """Take in an event read after the suspect; True once what happened is clear."""
        if self.next is None:
            self.next = link
            if self.wait == "next":
                return True
        if (
            self.wait == "successor"
            and self.slot is not None
            and link[1] == self.expected_prev
            and _with_seq(link, self.slot) == link[2]
        ):
            self.successor = link
            return True
        return False


def _confirmed(link: Link, following: Link | None, bounds: ChainBounds) -> bool:
    """Does the chain carry on from `link`: the next event, or else the head, links to it?"""
    if following is not None:
        return following[1] == link[2]
    return bounds.head is not None and bounds.head[1] == link[2]


def diagnose_at_once(
    s: Suspect, bounds: ChainBounds, seen: Callable[[int], bool]
) -> Problem | None:
    """What can be said of the suspect without reading on; else None, with `s.wait` set to
    what to wait for. `seen(seq)` says whether an event of that seq already held."""
    x, prev = s.event, s.prev
    seq, id_ = name_of(x)
    prev_seq, prev_id = name_of(prev) if prev is not None else (None, None)
    org = x[0].get("org_id")

    if bounds.org_id is not None and org != bounds.org_id:
        if not s.own_ok:
            return changed(x, "its organization does not match its hash")
        return Problem(
            "inserted",
            seq,
            id_,
            f"event {_at(seq)} (id {id_}) belongs to organization {org}, not {bounds.org_id}",
        )
    if seq is None:
        return Problem("malformed", None, id_, f"event id {id_} has no integer seq")
    if bounds.limit is not None and seq > bounds.limit:
        return Problem(
            "inserted",
            seq,
            id_,
            f"event seq {seq} (id {id_}) lies beyond the chain's recorded end at seq "
            f"{bounds.limit}: it was added outside the append path",
        )
    if seq < 1 or (prev is None and bounds.first_seq is not None and seq < bounds.first_seq):
        return inserted(x, f"seq {seq} comes before the first seq of the chain or export")
    if prev is not None and prev_seq is not None and seq <= prev_seq:
        if seq < prev_seq:
            if bounds.complete or seen(seq):
                return inserted(x, f"it repeats seq {seq}, which the chain already had")
            return Problem(
                "reordered",
                seq,
                id_,
                f"event seq {seq} (id {id_}) comes after seq {prev_seq} (id {prev_id})",
                prev_seq,
                prev_id,
            )
        if x[2] == prev[2]:
            return inserted(x, f"it repeats event seq {seq}")
        s.wait = "next"  # two events share a seq: the one the chain carries on from is real
        return None
    if s.slot is None:
        # A filtered export with no event right before this one: its own hash is all there is.
        if not s.own_ok:
            return changed(x, "its hash does not match its content")
        # Else the only rule left it broke: a first event after the header's first_seq.
        return Problem(
            "deleted",
            seq,
            id_,
            f"the export should start at seq {bounds.first_seq}, but its first event is seq "
            f"{seq} (id {id_})",
        )
    if seq == s.slot and not s.own_ok and x[1] == s.expected_prev:
        # Linked to the right event and the hash is wrong: its content was edited in place.
        return changed(x, "its hash does not match its content (a field was changed)")
    if (
        not s.own_ok
        and prev is not None
        and prev_seq is not None
        and x[1] == prev[1]
        and _with_seq(x, prev_seq) == x[2]
    ):
        # It really is the event of the previous seq, renumbered: that one was slipped in.
        return inserted(prev, f"event id {id_} holds seq {prev_seq} and was renumbered")
    s.wait = "successor"
    return None


def diagnose(s: Suspect, bounds: ChainBounds) -> Problem:
    """What the suspect is, given what was read after it (all of it, if no successor)."""
    x, prev = s.event, s.prev
    seq, id_ = name_of(x)
    assert seq is not None
    prev_seq, prev_id = name_of(prev) if prev is not None else (None, None)

    if s.wait == "next":
        assert prev is not None
        if s.own_ok and x[1] == prev[1] and _confirmed(x, s.next, bounds):
            return inserted(
                prev,
                f"it shares seq {seq} with event id {id_}, which the chain carries on from",
            )
        return inserted(x, f"it repeats seq {seq}, already held by event id {prev_id}")

    assert s.slot is not None
    if s.successor is not None:
        y_seq, y_id = name_of(s.successor)
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
            return inserted(
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
        return changed(x, "its hash does not match its content")

    if seq > s.slot:
        gap = f"seq {s.slot} is" if seq == s.slot + 1 else f"seqs {s.slot} to {seq - 1} are"
        after = f"seq {prev_seq} (id {prev_id})" if prev is not None else "the chain's start"
        return Problem(
            "deleted", seq, id_, f"{gap} missing: event seq {seq} (id {id_}) follows {after}"
        )
    if not s.own_ok:
        return changed(x, "its hash does not match its content")
    if _confirmed(x, s.next, bounds):
        if prev is None:
            return changed(x, "it is first in the chain but does not start at genesis")
        return changed(
            prev,
            f"it is not the event seq {seq} (id {id_}) was chained to: it was changed and "
            "its hash recomputed, or events after it were removed",
        )
    return inserted(
        x, f"its hash holds but it does not link to {_at(prev_seq)}, and nothing links to it"
    )
