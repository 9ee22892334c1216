"""The SCIM service's one router (`/scim/v2`): Users, Groups, discovery, and a SCIM error for
any other path or method under it."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from blocks.api.scim import discovery, groups, users
from blocks.api.scim.auth import ScimCtx
from blocks.api.scim.protocol import SCIM_PATH, ScimRoute

router = APIRouter(tags=["scim"])
router.include_router(discovery.router)
router.include_router(users.router)
router.include_router(groups.router)
_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]
_unmatched = APIRouter(prefix=SCIM_PATH, route_class=ScimRoute, include_in_schema=False)


@_unmatched.api_route("/{rest:path}", methods=_METHODS)
async def unmatched(rest: str, request: Request, ctx: ScimCtx) -> Response:
    return discovery.unmatched(request, unmatched)


router.include_router(_unmatched)
