"""Audit data: the hash-chained event log, its signed checkpoints and the keys of personal data.

The one append path every writer uses and the events table (`events`), snapshot reads for export
and verification (`reads`), signed checkpoints (`checkpoints`) and the per-person keys that seal
personal fields and make erasure possible (`personal_data`).

May use: `blocks.models.base`, `core` and `infra` only; every other domain writes through
`events.append_events`.
"""
