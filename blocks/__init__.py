"""Blocks: Temporal-orchestrated durable workflows with approvals and a verifiable audit trail."""

__version__ = "0.1.0"
