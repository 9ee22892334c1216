"""The API reference at /docs: Swagger UI served from this site alone, under the strict CSP.

Swagger UI's files come from an installed package (fastapi-offline ships swagger-ui-dist's
bundle and stylesheet), never from a CDN, so the page works on a machine without internet
access. The page itself holds no inline script or style: a script of ours
(static/docs-init.js) starts Swagger UI, so it runs under `script-src 'self'`.
"""

from __future__ import annotations

import hashlib
import html
from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse

from blocks.api.errors import not_found

router = APIRouter(include_in_schema=False)

_SWAGGER_UI = Path(str(files("fastapi_offline") / "static"))
_OURS = Path(__file__).parent / "static"
# Name in the URL -> (file, media type): only these are served, whatever the path asks for.
_ASSETS: dict[str, tuple[Path, str]] = {
    "swagger-ui-bundle.js": (_SWAGGER_UI / "swagger-ui-bundle.js", "text/javascript"),
    "swagger-ui.css": (_SWAGGER_UI / "swagger-ui.css", "text/css"),
    "favicon.png": (_SWAGGER_UI / "favicon.png", "image/png"),
    "docs-init.js": (_OURS / "docs-init.js", "text/javascript"),
}
# The files' digest names their URLs, so a browser may keep them for good: new files (a Blocks
# or fastapi-offline upgrade) get new URLs. The page, which names them, is never cached.
_DIGEST = hashlib.sha256(b"".join(path.read_bytes() for path, _ in _ASSETS.values())).hexdigest()[
    :16
]
_ASSET_CACHE = {"Cache-Control": "public, max-age=31536000, immutable"}

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} API reference</title>
<link rel="icon" type="image/png" href="{assets}/favicon.png">
<link rel="stylesheet" href="{assets}/swagger-ui.css">
</head>
<body>
<div id="swagger-ui" data-openapi-url="{openapi}"></div>
<script src="{assets}/swagger-ui-bundle.js"></script>
<script src="{assets}/docs-init.js"></script>
</body>
</html>
"""


@router.get("/docs")
async def docs_page(request: Request) -> HTMLResponse:
    # root_path: the prefix a proxy serves the API under, as FastAPI's own docs page uses it.
    root = request.scope.get("root_path", "").rstrip("/")
    return HTMLResponse(
        _PAGE.format(
            title=html.escape(request.app.title),
            assets=html.escape(f"{root}/docs/assets/{_DIGEST}"),
            openapi=html.escape(f"{root}{request.app.openapi_url}"),
        )
    )


@router.get("/docs/assets/{digest}/{name}")
async def docs_asset(digest: str, name: str) -> FileResponse:
    asset = _ASSETS.get(name)
    if digest != _DIGEST or asset is None:
        raise not_found("Asset")
    path, media_type = asset
    return FileResponse(path, media_type=media_type, headers=_ASSET_CACHE)
