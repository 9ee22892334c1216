"""Temporal workflows and the author SDK (approval steps) they are written with."""
