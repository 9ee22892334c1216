"""A step's console page: the request, prior votes, reminders and escalations, and the decision form."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
