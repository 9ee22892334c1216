"""Console pages for admins: members and roles, invites, groups, API keys, security settings, integrations, sessions."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
