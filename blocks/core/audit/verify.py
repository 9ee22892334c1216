"""Verify an audit export file offline, or rows of the live chain: the verifier's entry points.

The export format is in `audit_export_format`, the checking in `audit_chain_verifier`, and the
naming of what went wrong (`changed`, `deleted`, `inserted`, `reordered`, `bad_checkpoint` or
`malformed`) in `audit_diagnosis`. Imports only the standard library, `blocks.core` and
`cryptography`, so an auditor can run it with nothing else.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace

from blocks.core.audit.chain_verifier import ChainVerifier, VerificationReport
from blocks.core.audit.diagnosis import Problem
from blocks.core.audit.event_hash import plain_event_hash
from blocks.core.audit.export_format import (
    Link,
    SignedCheckpoint,
    UnreadableLine,
    parse_header,
    read_links,
)
from blocks.core.audit.sealed_content import ContentChecker


def verify_export(
    lines: Iterable[str | bytes], *, public_key: str | None = None
) -> VerificationReport:
    """Verify an export, read line by line (a file object will do; it is read once).

    `public_key` (base64 raw Ed25519) pins the key every checkpoint must verify with, instead of
    trusting the keys the header lists.
    """
    numbered = enumerate(lines, start=1)
    try:
        for number, line in numbered:
            if line.strip():
                header = parse_header(line, number)
                break
        else:
            raise UnreadableLine("the export is empty", 1)
    except UnreadableLine as err:
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
        hash_of=plain_event_hash,
    )
    # An export with content revealed for an auditor: each sealed field is checked against its
    # clear text with the key the export gives for that event.
    content = ContentChecker() if header.get("content") == "revealed" else None
    links = read_links(numbered, verifier.add_checkpoint, content)
    try:
        verifier.feed(links)
        # Past a settled problem only checkpoints can still be read; events no longer matter.
        for _ in links:
            pass
    except UnreadableLine as err:
        verifier.malformed(f"line {err.line}: {err.message}", line=err.line)
    except (KeyError, TypeError) as err:
        verifier.malformed(f"an event line could not be read: {err!r}")
    report = verifier.finish()
    if content is None:
        return report
    content.finish()
    if content.problem is not None and report.ok:
        event_id, message, line = content.problem
        problem = Problem("content_mismatch", None, event_id, message, line=line)
        return replace(report, ok=False, problem=problem, content_checked=content.checked)
    return replace(report, content_checked=content.checked)


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
