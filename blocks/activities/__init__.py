"""Temporal activities: the I/O workflows delegate (audit writes first)."""
