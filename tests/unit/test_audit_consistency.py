"""The witness's consistency check on synthetic chains: a later export extends a kept checkpoint,
or the check says where the first rewritten event lies (naming it when the evidence allows)."""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict
from typing import Any

import pytest

from blocks.core.audit.chain import GENESIS_HASH, chain_hash
from blocks.core.audit.consistency import (
    ConsistencyReport,
    UnusableInput,
    check_consistency,
    parse_witness,
    read_witness,
)
from blocks.core.audit.export_format import Link, SignedCheckpoint
from tests.unit.test_audit_verify import (
    OTHER_SIGNER,
    SIGNER,
    _payload,
    build_chain,
    export_lines,
    head_of,
    sign,
)

CHAIN = build_chain(15)


def at(seq: int, links: list[Link] = CHAIN) -> SignedCheckpoint:
    """The checkpoint a witness kept when the chain ended at `seq`."""
    return sign(seq, links[seq - 1][2])


def rechained(links: list[Link], seq: int, **changes: Any) -> list[Link]:
    """A superuser's rewrite of event `seq`, every later hash recomputed so the export holds."""
    out: list[Link] = []
    prev = GENESIS_HASH
    for payload, _, _ in links:
        if payload["seq"] == seq:
            payload = {**payload, **changes}
        stored = chain_hash(prev, payload)
        out.append((payload, prev, stored))
        prev = stored
    return out


def check(
    links: list[Link],
    witnessed: list[SignedCheckpoint],
    *,
    in_export: list[SignedCheckpoint] = (),  # type: ignore[assignment]
    **kwargs: Any,
) -> ConsistencyReport:
    lines = export_lines(links, head=head_of(links), checkpoints=list(in_export))
    return check_consistency(list(lines), witnessed, **kwargs)


def test_a_later_honest_export_extends_the_witnessed_checkpoints() -> None:
    report = check(CHAIN, [at(4), at(9)], in_export=[at(12)])
    assert report.ok, report
    assert [w.seq for w in report.witnesses] == [4, 9]
    assert all(w.matches for w in report.witnesses)
    assert report.events_read == 15
    assert report.export_checkpoints_used == 1


def test_a_head_only_witness_gives_the_range_when_everything_was_rehashed() -> None:
    forged = rechained(CHAIN, 6, target_id="forged")
    report = check(forged, [at(10)])
    assert not report.ok
    assert report.problem is not None
    assert report.problem.kind == "diverged"
    assert (report.problem.first_seq, report.problem.last_seq) == (1, 10)
    assert report.problem.seq is None
    assert "events 1 to 10 must be compared with the SIEM's copy" in report.problem.message


def test_consecutive_witnessed_checkpoints_name_the_rewritten_event() -> None:
    forged = rechained(CHAIN, 6, target_id="forged")
    report = check(forged, [at(5), at(6), at(10)])
    problem = report.problem
    assert problem is not None
    assert (problem.kind, problem.seq, problem.id) == ("changed", 6, str(uuid.UUID(int=6)))
    assert [w.matches for w in report.witnesses] == [True, False, False]


def test_genuine_checkpoints_left_in_the_export_narrow_the_range() -> None:
    forged = rechained(CHAIN, 6, target_id="forged")
    # The superuser kept the checkpoint before the rewrite (it still verifies and matches).
    report = check(forged, [at(10)], in_export=[at(3), at(5)])
    assert report.problem is not None
    assert (report.problem.kind, report.problem.first_seq, report.problem.last_seq) == (
        "diverged",
        6,
        10,
    )
    assert report.export_checkpoints_used == 2
    named = check(forged, [at(6)], in_export=[at(5)])
    assert named.problem is not None
    assert (named.problem.kind, named.problem.seq) == ("changed", 6)


def test_an_edit_without_rehashing_is_named_where_the_stored_chain_breaks() -> None:
    edited = [
        ((_payload(7, target_id="forged"), prev, stored) if p["seq"] == 7 else (p, prev, stored))
        for p, prev, stored in CHAIN
    ]
    report = check(edited, [at(12)], in_export=[at(6)])
    assert report.problem is not None
    assert (report.problem.kind, report.problem.seq, report.problem.id) == (
        "changed",
        7,
        str(uuid.UUID(int=7)),
    )
    assert "or before it" not in report.problem.message
    alone = check(edited, [at(12)])
    assert alone.problem is not None
    assert alone.problem.seq == 7
    # Without a matching checkpoint right before, an earlier re-hashed event cannot be ruled out.
    assert "or before it" in alone.problem.message


def test_an_export_that_ends_before_the_witnessed_seq_is_caught() -> None:
    report = check(CHAIN[:7], [at(10)])
    assert report.problem is not None
    assert (report.problem.kind, report.problem.first_seq, report.problem.last_seq) == (
        "missing",
        8,
        10,
    )


def test_a_witness_that_does_not_verify_is_refused() -> None:
    forged = sign(10, CHAIN[9][2], signer=OTHER_SIGNER)  # same key id, another key
    report = check(CHAIN, [forged])
    assert report.problem is not None
    assert report.problem.kind == "bad_witness"
    # Pinned: the export's header cannot vouch for a key of its own choosing.
    pinned = check(CHAIN, [at(10)], public_key=OTHER_SIGNER.public().b64())
    assert pinned.problem is not None
    assert pinned.problem.kind == "bad_witness"
    assert check(CHAIN, [at(10)], public_key=SIGNER.public().b64()).ok


def test_witness_files_in_each_shape_are_read() -> None:
    cp = at(9)
    api = {"id": str(uuid.uuid4()), **asdict(cp), "signed_at": cp.signed_at.replace("+00:00", "Z")}
    line = cp.line()
    for text in (
        json.dumps(api),
        line,
        json.dumps([api, asdict(at(4))]),
        line + at(4).line(),
        "".join(export_lines(CHAIN[:9], head=head_of(CHAIN[:9]), checkpoints=[cp])),
    ):
        parsed = parse_witness(text)
        assert parsed[0].seq == 9
        assert check_consistency(list(export_lines(CHAIN, head=head_of(CHAIN))), parsed).ok


@pytest.mark.parametrize(
    "text", ["", "not json", '{"type": "event"}', json.dumps({"seq": 3}), "[1, 2]"]
)
def test_an_unreadable_witness_is_unusable(text: str) -> None:
    with pytest.raises(UnusableInput):
        parse_witness(text)


def test_a_filtered_export_or_another_organization_is_unusable() -> None:
    filtered = export_lines(CHAIN[3:], complete=False, first_seq=4, last_seq=15)
    with pytest.raises(UnusableInput, match="filtered"):
        check_consistency(list(filtered), [at(9)])
    other = sign(9, CHAIN[8][2], org=str(uuid.uuid4()))
    with pytest.raises(UnusableInput, match="organization"):
        check(CHAIN, [other])
    with pytest.raises(UnusableInput):
        check_consistency(["not json\n"], [at(9)])


def _copy(links: list[Link], *checkpoints: SignedCheckpoint) -> bytes:
    """A copy of the events kept outside (an earlier export), read as a witness file."""
    text = "".join(export_lines(links, head=head_of(links), checkpoints=list(checkpoints)))
    witness = read_witness(text)
    assert [c.seq for c in witness.checkpoints] == [c.seq for c in checkpoints]
    return witness.chain


def test_a_copy_of_the_events_names_the_rewritten_event_under_a_head_only_witness() -> None:
    forged = rechained(CHAIN, 6, target_id="forged")
    copy = _copy(CHAIN[:12], at(12))
    report = check(forged, [at(10)], copies=[copy])
    assert report.problem is not None
    assert (report.problem.kind, report.problem.seq, report.problem.id) == (
        "changed",
        6,
        str(uuid.UUID(int=6)),
    )
    # A copy that reaches no signed checkpoint proves nothing: only the range is said.
    doctored = _copy(rechained(CHAIN[:12], 3, target_id="also forged"))
    untrusted = check(forged, [at(10)], copies=[doctored])
    assert untrusted.problem is not None
    assert untrusted.problem.kind == "diverged"
    # Nor one trusted only up to a seq before the mismatch.
    short = check(forged, [at(4), at(10)], copies=[_copy(CHAIN[:5])])
    assert short.problem is not None
    assert (short.problem.kind, short.problem.first_seq, short.problem.last_seq) == (
        "diverged",
        5,
        10,
    )
