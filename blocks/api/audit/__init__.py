"""Audit-log routes: read, export and verify the hash-chained log, sign checkpoints, erase people.

The organization's events and a run's events (`events`), export as JSON Lines or CSV with live
verification and a run's chain of custody (`export`, `export_csv`), signed checkpoints and the
public key (`checkpoints`), and erasure of a member's personal data (`privacy`).

May use: the shared modules at `blocks.api`'s top only. Every other domain writes audit events
through `blocks.api.deps` and `blocks.models.audit.events`, not through these routes.
"""
