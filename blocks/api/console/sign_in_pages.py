"""Console sign-in: password, emailed link, second factor, the organization picker and SSO buttons."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
