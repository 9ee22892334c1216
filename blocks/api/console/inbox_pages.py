"""The console inbox: the steps the signed-in person may decide now, with SLA time left."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
