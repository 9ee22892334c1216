"""What a signed audit checkpoint says, and the exact bytes its Ed25519 signature covers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from blocks.core.audit.chain import canonical_json


@dataclass(frozen=True)
class CheckpointClaim:
    """At `signed_at`, organization `org_id`'s chain ended at event `seq` whose hash was `hash`."""

    org_id: str
    seq: int
    hash: str
    signed_at: datetime
    key_id: str

    def message(self) -> bytes:
        return canonical_json(
            {
                "type": "blocks.audit.checkpoint.v1",
                "org_id": self.org_id,
                "seq": self.seq,
                "hash": self.hash,
                "signed_at": self.signed_at.astimezone(UTC).isoformat(timespec="microseconds"),
                "key_id": self.key_id,
            }
        )
