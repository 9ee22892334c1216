"""Deterministic identifiers, so an event written twice by a retried activity is one event."""

from __future__ import annotations

import uuid

_BLOCKS_NAMESPACE = uuid.UUID("6f1c9a52-3d1e-4c8e-9a57-0b6f5d2b7e11")


def workflow_event_id(workflow_id: str, key: str) -> uuid.UUID:
    return uuid.uuid5(_BLOCKS_NAMESPACE, f"{workflow_id}:{key}")
