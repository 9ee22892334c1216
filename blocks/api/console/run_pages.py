"""Console pages for operators: runs with filters, a run's step timeline, starting and cancelling runs."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
