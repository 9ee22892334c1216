"""The export verifier on synthetic chains: each kind of tampering is caught and the right event named."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import pytest
import rfc8785

from blocks.core.audit.chain import GENESIS_HASH, chain_hash
from blocks.core.audit.chain_verifier import ChainVerifier, VerificationReport
from blocks.core.audit.checkpoints import CheckpointClaim
from blocks.core.audit.event_hash import event_hash
from blocks.core.audit.export_format import (
    Link,
    SignedCheckpoint,
    event_line,
    header_line,
    signed_checkpoint,
)
from blocks.core.audit.verify import verify_export, verify_rows
from blocks.infra.crypto.signing import CheckpointSigner, new_signing_key_spec, parse_signing_key

ORG = str(uuid.UUID(int=0xB10C5))
SIGNER = parse_signing_key(new_signing_key_spec("k1"))
OTHER_SIGNER = parse_signing_key(new_signing_key_spec("k1"))
KEYS = {SIGNER.key_id: SIGNER.public().b64()}


def _payload(seq: int, *, org: str = ORG, **changes: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "id": str(uuid.UUID(int=seq)),
        "org_id": org,
        "seq": seq,
        "occurred_at": f"2026-11-24T10:00:{seq % 60:02d}.000000+00:00",
        "action": f"step.decided.{seq}",
        "actor_type": "user",
        "actor_id": "u-1",
        "actor_email": "approver@example.test",
        "target_type": "step",
        "target_id": "manager",
        "run_id": "run-1" if seq % 2 else "run-2",
        "outcome": "success",
        "reason": None,
        "ip": "127.0.0.1",
        "user_agent": "pytest",
        "data": {"n": seq, "comment": "ok", "tags": ["a", "b"]},
    }
    payload.update(changes)
    return payload


def build_chain(n: int, *, start_hash: str = GENESIS_HASH, first: int = 1) -> list[Link]:
    links: list[Link] = []
    prev = start_hash
    for seq in range(first, first + n):
        payload = _payload(seq)
        stored = chain_hash(prev, payload)
        links.append((payload, prev, stored))
        prev = stored
    return links


def forge(payload: dict[str, Any], prev_hash: str) -> Link:
    """An event with a self-consistent hash, as someone who knows the scheme would write it."""
    return payload, prev_hash, chain_hash(prev_hash, payload)


def export_lines(
    links: list[Link],
    *,
    head: tuple[int, str] | None = None,
    complete: bool = True,
    checkpoints: list[SignedCheckpoint] = (),  # type: ignore[assignment]
    first_seq: int | None = None,
    last_seq: int | None = None,
    keys: dict[str, str] | None = None,
) -> Iterator[str]:
    yield header_line(
        org_id=ORG,
        exported_at=datetime.now(UTC),
        filters={},
        complete=complete,
        first_seq=first_seq,
        last_seq=last_seq,
        head=head,
        public_keys=keys if keys is not None else {SIGNER.key_id: SIGNER.public().b64()},
    )
    for payload, prev_hash, stored in links:
        yield event_line(payload, prev_hash, stored)
    for checkpoint in checkpoints:
        yield checkpoint.line()


def head_of(links: list[Link]) -> tuple[int, str]:
    return links[-1][0]["seq"], links[-1][2]


def sign(
    seq: int, hash_: str, *, signer: CheckpointSigner = SIGNER, org: str = ORG
) -> SignedCheckpoint:
    signed_at = datetime(2026, 11, 24, 12, 0, seq % 60, 123456, tzinfo=UTC)
    claim = CheckpointClaim(org, seq, hash_, signed_at, signer.key_id)
    return signed_checkpoint(
        org_id=org,
        seq=seq,
        hash_=hash_,
        signed_at=signed_at,
        key_id=signer.key_id,
        signature=signer.sign(claim.message()),
    )


def check(lines: Iterator[str], **kwargs: Any) -> VerificationReport:
    # Through text, as an auditor's file would be read.
    return verify_export(list(lines), **kwargs)


def assert_problem(
    report: VerificationReport, kind: str, seq: int | None, related: int | None = None
) -> None:
    assert not report.ok, report
    assert report.problem is not None
    assert (report.problem.kind, report.problem.seq) == (kind, seq), report.problem
    if seq is not None and kind != "bad_checkpoint":
        assert report.problem.id == (str(uuid.UUID(int=seq)) if seq > 0 else report.problem.id)
    if related is not None:
        assert report.problem.related_seq == related, report.problem
        assert report.problem.related_id == str(uuid.UUID(int=related))


CHAIN = build_chain(12)
HEAD = head_of(CHAIN)


# ------------------------------------------------------------------------- canonical encoding


class Colour(StrEnum):
    RED = "red"


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"n": 1, "neg": -(2**53) + 1, "max": 2**53 - 1, "t": True, "f": False, "z": None},
        {"text": 'quote " backslash \\ tab \t nl \n cr \r bs \b ff \f nul \x00 us \x1f del \x7f'},
        {"unicode": "é ü ß 中文 \u2028 \u2029 \x85 😀", "é": 1, "z": 2, "a": 3},
        {"\ue000": 1, "\U0001f600": 2, "\uffff": 3, "a": 4},  # UTF-16 order differs here
        {"floats": [1.0, 0.5, 1e21, 1e-7, -0.0, 123456789.125, 5e-324]},
        {"nested": {"b": [1, {"d": [], "c": {}}], "a": [[], [None]]}},
        {"tuple": (1, 2)},
        {"enum": Colour.RED},
    ],
)
def test_fast_hash_is_the_rfc8785_hash(data: dict[str, Any]) -> None:
    payload = _payload(1, data=data)
    assert event_hash(GENESIS_HASH, payload) == chain_hash(GENESIS_HASH, payload)


@pytest.mark.parametrize(
    "data", [{"big": 2**53}, {"nan": float("nan")}, {"inf": float("inf")}, {"lone": "\ud800"}]
)
def test_what_rfc8785_refuses_has_no_hash(data: dict[str, Any]) -> None:
    payload = _payload(1, data=data)
    with pytest.raises(ValueError):  # noqa: PT011  (rfc8785 raises ValueError subclasses)
        rfc8785.dumps(payload)
    assert event_hash(GENESIS_HASH, payload) is None


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    choice = rng.randrange(9 if depth < 3 else 6)
    alphabet = 'aZ09 "\\\n\x01\x7fé中\u2028\ue000\uffff😀'
    text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(6)))
    if choice == 0:
        return None
    if choice == 1:
        return rng.choice([True, False])
    if choice == 2:
        return rng.randint(-(2**53) + 1, 2**53 - 1)
    if choice == 3:
        return text
    if choice == 4:
        return rng.uniform(-1e6, 1e6) if rng.random() < 0.5 else float(rng.randint(-99, 99))
    if choice == 5:
        return rng.randint(-1000, 1000)
    if choice in (6, 7):
        return {
            "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 4))): _random_value(
                rng, depth + 1
            )
            for _ in range(rng.randrange(5))
        }
    return [_random_value(rng, depth + 1) for _ in range(rng.randrange(4))]


def test_fast_hash_matches_rfc8785_on_random_json() -> None:
    rng = random.Random(8785)
    for _ in range(3000):
        payload = _payload(7, data={"v": _random_value(rng)})
        # Through JSON and back, as the verifier sees an exported line.
        parsed = json.loads(json.dumps(payload))
        assert event_hash("a" * 64, parsed) == chain_hash("a" * 64, parsed)


# ------------------------------------------------------------------------------- intact chains


def test_an_intact_export_verifies() -> None:
    sig = sign(5, CHAIN[4][2])
    report = check(export_lines(CHAIN, head=HEAD, checkpoints=[sig, sign(12, HEAD[1])]))
    assert report.ok, report.problem
    assert (report.events_checked, report.checkpoints_checked) == (12, 2)
    assert (report.last_seq, report.last_hash) == HEAD


def test_an_empty_chain_verifies_and_a_lone_header_is_malformed_without_a_header() -> None:
    assert check(export_lines([], head=(0, GENESIS_HASH))).ok
    assert_problem(verify_export([]), "malformed", None)
    assert_problem(verify_export(["\n", "not json\n"]), "malformed", None)


def test_the_tool_rejects_a_file_from_another_format() -> None:
    header = json.loads(next(export_lines(CHAIN)))
    report = verify_export([json.dumps({**header, "format": "other.v2"})])
    assert_problem(report, "malformed", None)
    assert report.problem is not None
    assert report.problem.line == 1


# ------------------------------------------------------------------------------------ changed


def test_a_changed_field_names_the_event() -> None:
    tampered = list(CHAIN)
    payload, prev, stored = tampered[4]
    tampered[4] = ({**payload, "outcome": "denied"}, prev, stored)
    assert_problem(check(export_lines(tampered, head=HEAD)), "changed", 5)


def test_a_changed_field_in_nested_data_names_the_event() -> None:
    tampered = list(CHAIN)
    payload, prev, stored = tampered[0]
    tampered[0] = ({**payload, "data": {**payload["data"], "n": 2}}, prev, stored)
    assert_problem(check(export_lines(tampered, head=HEAD)), "changed", 1)


def test_an_added_field_is_a_change() -> None:
    tampered = list(CHAIN)
    payload, prev, stored = tampered[6]
    tampered[6] = ({**payload, "approved_by": "ceo"}, prev, stored)
    assert_problem(check(export_lines(tampered, head=HEAD)), "changed", 7)


def test_a_changed_and_rehashed_event_is_named_by_the_link_after_it() -> None:
    tampered = list(CHAIN)
    payload, prev, _ = tampered[4]
    tampered[4] = forge({**payload, "actor_id": "someone-else"}, prev)
    assert_problem(check(export_lines(tampered, head=HEAD)), "changed", 5)


def test_a_changed_and_rehashed_last_event_is_caught_by_the_head() -> None:
    tampered = list(CHAIN)
    payload, prev, _ = tampered[-1]
    tampered[-1] = forge({**payload, "outcome": "denied"}, prev)
    assert_problem(check(export_lines(tampered, head=HEAD)), "changed", 12)
    # Without the recorded head nothing says what the last event was.
    assert check(export_lines(tampered)).ok


def test_a_fully_rechained_change_is_caught_by_a_signed_checkpoint() -> None:
    payload, prev, _ = CHAIN[3]
    rechained = [*CHAIN[:3], forge({**payload, "reason": "rewritten"}, prev)]
    for payload, _, _ in CHAIN[4:]:
        rechained.append(forge(payload, rechained[-1][2]))
    lines = export_lines(rechained, head=head_of(rechained), checkpoints=[sign(8, CHAIN[7][2])])
    report = check(lines)
    assert report.problem is not None
    # Checkpoints come after the events: the verifier kept hashes (32 bytes each), not ids.
    assert (report.problem.kind, report.problem.seq) == ("changed", 8)
    assert "checkpoint" in report.problem.message


# ------------------------------------------------------------------------------------ deleted


def test_a_deleted_event_names_the_event_after_the_gap() -> None:
    report = check(export_lines([*CHAIN[:5], *CHAIN[6:]], head=HEAD))
    assert_problem(report, "deleted", 7)
    assert report.problem is not None
    assert "seq 6 is missing" in report.problem.message


def test_several_deleted_events_name_the_range() -> None:
    report = check(export_lines([*CHAIN[:2], *CHAIN[7:]], head=HEAD))
    assert_problem(report, "deleted", 8)
    assert report.problem is not None
    assert "seqs 3 to 7" in report.problem.message


def test_a_deleted_first_event_is_caught() -> None:
    assert_problem(check(export_lines(CHAIN[1:], head=HEAD)), "deleted", 2)


def test_deleted_last_events_are_caught_by_the_head() -> None:
    report = check(export_lines(CHAIN[:-2], head=HEAD))
    assert not report.ok
    assert report.problem is not None
    assert (report.problem.kind, report.problem.seq, report.problem.id) == ("deleted", 11, None)


def test_deleted_last_events_are_caught_by_a_checkpoint_when_the_head_was_rolled_back() -> None:
    shortened = CHAIN[:-2]
    report = check(
        export_lines(shortened, head=head_of(shortened), checkpoints=[sign(12, HEAD[1])])
    )
    assert not report.ok
    assert report.problem is not None
    assert (report.problem.kind, report.problem.seq) == ("deleted", 11)


def test_a_deleted_event_with_the_rest_renumbered_and_rehashed_is_caught_by_its_link() -> None:
    # Event 6 removed; 7.. become 6.. with hashes recomputed, but 7 still names 6 as its prev.
    renumbered = list(CHAIN[:5])
    payload, prev, _ = CHAIN[6]
    renumbered.append(forge({**payload, "seq": 6}, prev))
    for payload, _, _ in CHAIN[7:]:
        renumbered.append(forge({**payload, "seq": payload["seq"] - 1}, renumbered[-1][2]))
    report = check(export_lines(renumbered, head=head_of(renumbered)))
    assert not report.ok
    assert report.problem is not None
    # The event before the break is what 7-now-6 does not link to.
    assert (report.problem.kind, report.problem.seq) == ("changed", 5)


# ----------------------------------------------------------------------------------- inserted


def test_a_forged_event_linked_in_with_a_duplicate_seq_is_named() -> None:
    forged = forge(_payload(6, action="payment.released", id=str(uuid.UUID(int=666))), CHAIN[4][2])
    report = check(export_lines([*CHAIN[:5], forged, *CHAIN[5:]], head=HEAD))
    assert not report.ok
    assert report.problem is not None
    assert (report.problem.kind, report.problem.id) == ("inserted", str(uuid.UUID(int=666)))


def test_a_forged_event_after_the_real_one_with_its_seq_is_named() -> None:
    forged = forge({**_payload(6, action="x"), "id": str(uuid.UUID(int=666))}, CHAIN[4][2])
    report = check(export_lines([*CHAIN[:6], forged, *CHAIN[6:]], head=HEAD))
    assert report.problem is not None
    assert (report.problem.kind, report.problem.id) == ("inserted", str(uuid.UUID(int=666)))


def test_a_forged_event_with_a_made_up_prev_hash_is_named() -> None:
    forged = forge({**_payload(6, action="x"), "id": str(uuid.UUID(int=666))}, "f" * 64)
    report = check(export_lines([*CHAIN[:5], forged, *CHAIN[5:]], head=HEAD))
    assert report.problem is not None
    assert (report.problem.kind, report.problem.id) == ("inserted", str(uuid.UUID(int=666)))


def test_a_forged_event_with_the_rest_renumbered_is_named() -> None:
    forged = forge({**_payload(6, action="x"), "id": str(uuid.UUID(int=666))}, CHAIN[4][2])
    shifted = [({**p, "seq": p["seq"] + 1}, prev, h) for p, prev, h in CHAIN[5:]]
    report = check(export_lines([*CHAIN[:5], forged, *shifted]))
    assert report.problem is not None
    assert (report.problem.kind, report.problem.id) == ("inserted", str(uuid.UUID(int=666)))


def test_an_event_appended_past_the_recorded_head_is_named() -> None:
    forged = forge(_payload(13), HEAD[1])  # perfectly linked: only the head gives it away
    assert_problem(check(export_lines([*CHAIN, forged], head=HEAD)), "inserted", 13)
    assert check(export_lines([*CHAIN, forged])).ok


def test_an_event_appended_with_a_broken_link_is_named_without_a_head() -> None:
    forged = forge(_payload(13), CHAIN[3][2])
    assert_problem(check(export_lines([*CHAIN, forged])), "inserted", 13)


def test_an_event_ahead_of_the_first_is_named() -> None:
    forged = forge(_payload(0), GENESIS_HASH)
    assert_problem(check(export_lines([forged, *CHAIN], head=HEAD)), "inserted", 0)


def test_an_event_of_another_organization_is_named() -> None:
    other = str(uuid.uuid4())
    forged = forge(_payload(6, org=other), CHAIN[4][2])
    assert_problem(check(export_lines([*CHAIN[:5], forged, *CHAIN[6:]], head=HEAD)), "inserted", 6)


def test_a_repeated_line_is_named() -> None:
    report = check(export_lines([*CHAIN[:6], CHAIN[5], *CHAIN[6:]], head=HEAD))
    assert_problem(report, "inserted", 6)


# ---------------------------------------------------------------------------------- reordered


def test_two_swapped_lines_name_the_first_out_of_place() -> None:
    swapped = [*CHAIN[:2], CHAIN[3], CHAIN[2], *CHAIN[4:]]
    assert_problem(check(export_lines(swapped, head=HEAD)), "reordered", 4, related=3)


def test_an_event_moved_far_later_is_reordered() -> None:
    moved = [*CHAIN[:2], *CHAIN[3:], CHAIN[2]]
    assert_problem(check(export_lines(moved, head=HEAD)), "reordered", 4, related=3)


def test_an_event_moved_earlier_is_reordered() -> None:
    moved = [*CHAIN[:2], CHAIN[9], *CHAIN[2:9], *CHAIN[10:]]
    assert_problem(check(export_lines(moved, head=HEAD)), "reordered", 10, related=3)


def test_two_events_with_swapped_seqs_are_reordered() -> None:
    # What swapping the seq column of events 3 and 4 in the table looks like, read by seq.
    (p3, prev3, h3), (p4, prev4, h4) = CHAIN[2], CHAIN[3]
    swapped = [*CHAIN[:2], ({**p4, "seq": 3}, prev4, h4), ({**p3, "seq": 4}, prev3, h3), *CHAIN[4:]]
    report = check(export_lines(swapped, head=HEAD))
    assert report.problem is not None
    assert report.problem.kind == "reordered"
    assert (report.problem.seq, report.problem.id) == (3, str(uuid.UUID(int=4)))
    assert (report.problem.related_seq, report.problem.related_id) == (4, str(uuid.UUID(int=3)))


def test_far_apart_swapped_seqs_are_reordered() -> None:
    (p3, prev3, h3), (p9, prev9, h9) = CHAIN[2], CHAIN[8]
    swapped = [
        *CHAIN[:2],
        ({**p9, "seq": 3}, prev9, h9),
        *CHAIN[3:8],
        ({**p3, "seq": 9}, prev3, h3),
        *CHAIN[9:],
    ]
    report = check(export_lines(swapped, head=HEAD))
    assert report.problem is not None
    assert (report.problem.kind, report.problem.id) == ("reordered", str(uuid.UUID(int=9)))
    assert report.problem.related_id == str(uuid.UUID(int=3))


# ------------------------------------------------------------------------------ filtered exports


def _odd(links: list[Link]) -> list[Link]:
    return [link for link in links if link[0]["seq"] % 2]


def test_a_filtered_export_checks_own_hashes_and_consecutive_links() -> None:
    subset = [*CHAIN[2:5], *_odd(CHAIN[5:])]  # 3,4,5 consecutive, then 7, 9, 11
    lines = export_lines(subset, complete=False, first_seq=3, last_seq=11, head=HEAD)
    report = check(lines)
    assert report.ok, report.problem
    assert not report.complete

    changed = list(subset)
    changed[4] = ({**changed[4][0], "reason": "x"}, changed[4][1], changed[4][2])
    assert_problem(check(export_lines(changed, complete=False)), "changed", 9)

    relinked = list(subset)
    relinked[1] = forge(relinked[1][0], "e" * 64)  # seq 4 no longer links to seq 3
    assert_problem(check(export_lines(relinked, complete=False)), "inserted", 4)

    backwards = [subset[0], subset[3], subset[1], *subset[4:]]
    assert_problem(check(export_lines(backwards, complete=False)), "reordered", 4)


def test_a_filtered_export_cut_short_is_caught_by_its_header() -> None:
    subset = _odd(CHAIN)
    report = check(export_lines(subset[:-1], complete=False, first_seq=1, last_seq=11))
    assert not report.ok
    assert report.problem is not None
    assert (report.problem.kind, report.problem.seq) == ("deleted", 11)
    assert_problem(
        check(export_lines(subset[1:], complete=False, first_seq=1, last_seq=11)), "deleted", 3
    )


# -------------------------------------------------------------------------------- checkpoints


def test_a_checkpoint_with_a_bad_signature_is_caught() -> None:
    good = sign(6, CHAIN[5][2])
    forged_sig = SignedCheckpoint(**{**good.__dict__, "signature": sign(7, CHAIN[6][2]).signature})
    report = check(export_lines(CHAIN, head=HEAD, checkpoints=[good, forged_sig]))
    assert_problem(report, "bad_checkpoint", 6)
    assert report.checkpoints_checked == 2


def test_a_checkpoint_whose_hash_was_edited_is_caught() -> None:
    edited = SignedCheckpoint(**{**sign(6, CHAIN[5][2]).__dict__, "hash": "0" * 64})
    assert_problem(check(export_lines(CHAIN, head=HEAD, checkpoints=[edited])), "bad_checkpoint", 6)


def test_a_checkpoint_by_an_unknown_key_or_another_org_is_caught() -> None:
    by_other = sign(6, CHAIN[5][2], signer=OTHER_SIGNER)  # same key id, different key
    assert_problem(
        check(export_lines(CHAIN, head=HEAD, checkpoints=[by_other])), "bad_checkpoint", 6
    )
    unknown = check(export_lines(CHAIN, head=HEAD, checkpoints=[sign(6, CHAIN[5][2])], keys={}))
    assert_problem(unknown, "bad_checkpoint", 6)
    other_org = sign(6, CHAIN[5][2], org=str(uuid.uuid4()))
    assert_problem(
        check(export_lines(CHAIN, head=HEAD, checkpoints=[other_org])), "bad_checkpoint", 6
    )


def test_a_pinned_key_overrides_the_header() -> None:
    by_other = sign(6, CHAIN[5][2], signer=OTHER_SIGNER)
    keys = {OTHER_SIGNER.key_id: OTHER_SIGNER.public().b64()}  # a header that lies
    lines = list(export_lines(CHAIN, head=HEAD, checkpoints=[by_other], keys=keys))
    assert verify_export(lines).ok
    report = verify_export(lines, public_key=SIGNER.public().b64())
    assert_problem(report, "bad_checkpoint", 6)


def test_an_event_problem_comes_before_a_checkpoint_problem() -> None:
    edited = SignedCheckpoint(**{**sign(6, CHAIN[5][2]).__dict__, "hash": "0" * 64})
    report = check(export_lines([*CHAIN[:3], *CHAIN[4:]], head=HEAD, checkpoints=[edited]))
    assert_problem(report, "deleted", 5)


# ---------------------------------------------------------------------------------- malformed


def test_malformed_lines_are_reported_with_their_line_number() -> None:
    lines = list(export_lines(CHAIN, head=HEAD))
    broken = [*lines[:4], '{"type": "event", "seq": 4}\n', *lines[5:]]
    report = verify_export(broken)
    assert_problem(report, "malformed", None)
    assert report.problem is not None
    assert report.problem.line == 5
    assert verify_export([*lines[:3], "{oops\n"]).problem.line == 4  # type: ignore[union-attr]
    assert_problem(verify_export([*lines, '{"type": "note"}\n']), "malformed", None)
    # The first problem wins: a gap before the unreadable line.
    assert_problem(verify_export([*lines[:3], *lines[4:8], "{oops\n"]), "deleted", 4)


# ------------------------------------------------------------------- live rows and batch feeding


def test_rows_verify_with_checkpoints_and_in_batches() -> None:
    report = verify_rows(
        CHAIN, org_id=ORG, head=HEAD, checkpoints=[sign(12, HEAD[1])], public_keys=KEYS
    )
    assert report.ok, report.problem
    assert report.checkpoints_checked == 1

    swapped_seqs = list(CHAIN)
    (p5, prev5, h5), (p6, prev6, h6) = CHAIN[4], CHAIN[5]
    swapped_seqs[4] = ({**p6, "seq": 5}, prev6, h6)
    swapped_seqs[5] = ({**p5, "seq": 6}, prev5, h5)
    verifier = ChainVerifier(
        org_id=ORG, complete=True, head=HEAD, public_keys=KEYS, remember_hashes=False
    )
    verifier.add_checkpoint(sign(3, CHAIN[2][2]))
    verifier.feed(swapped_seqs[:5])  # the partner that explains event 5 is in the next batch
    assert not verifier.settled
    verifier.feed(swapped_seqs[5:])
    report = verifier.finish()
    assert report.problem is not None
    assert (report.problem.kind, report.problem.id) == ("reordered", str(uuid.UUID(int=6)))


def test_a_checkpoint_fed_first_catches_a_rechained_event_as_it_passes() -> None:
    payload, prev, _ = CHAIN[1]
    rechained = [CHAIN[0], forge({**payload, "reason": "x"}, prev)]
    for payload, _, _ in CHAIN[2:]:
        rechained.append(forge(payload, rechained[-1][2]))
    report = verify_rows(
        rechained,
        org_id=ORG,
        head=head_of(rechained),
        checkpoints=[sign(4, CHAIN[3][2])],
        public_keys=KEYS,
    )
    assert_problem(report, "changed", 4)
