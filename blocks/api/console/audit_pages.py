"""Console pages for auditors: events with filters, a run's chain of custody, verification, export, the SLA report."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
