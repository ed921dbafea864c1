"""`/docs`: Swagger UI 5 served from the app's own files (the `swagger-ui-py` wheel), no CDN and
no inline script, so the page's Content-Security-Policy (dupify.server.headers) can allow only
this origin's files."""

from __future__ import annotations

import html
import importlib.util
import json
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

ASSETS = "/docs/assets"
START_SCRIPT = "/docs/start.js"
FAVICON = "/static/favicon.svg"


def swagger_ui_files() -> Path:
    """Swagger UI's built files inside the installed `swagger_ui` package, found without
    importing it (its import pulls in adapters for a dozen web frameworks we do not use).

    Swagger UI 5: the 4.x line cannot render the OpenAPI 3.1 document FastAPI serves."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or spec.origin is None:
        raise RuntimeError("swagger-ui-py is not installed (make install)")
    return Path(spec.origin).parent / "static"


def install_docs(app: FastAPI) -> None:
    """Replace FastAPI's default /docs and /redoc, which load scripts and a favicon from third
    parties (the policy promises no third-party script) and start Swagger UI from an inline
    script (which a strict Content-Security-Policy refuses)."""
    app.mount(ASSETS, StaticFiles(directory=swagger_ui_files()), name="swagger-ui")
    title = html.escape(f"{app.title} API reference")
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="stylesheet" href="{ASSETS}/swagger-ui.css">
<link rel="icon" href="{FAVICON}">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{ASSETS}/swagger-ui-bundle.js"></script>
<script src="{START_SCRIPT}"></script>
</body>
</html>
"""
    start = f"""window.ui = SwaggerUIBundle({{
  url: {json.dumps(app.openapi_url or "/openapi.json")},
  dom_id: "#swagger-ui",
  layout: "BaseLayout",
  deepLinking: true,
  showExtensions: true,
  showCommonExtensions: true,
  // Swagger UI would otherwise send the schema to its public validator for a badge.
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis],
}});
"""

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get(START_SCRIPT, include_in_schema=False)
    async def swagger_ui_start() -> Response:
        return Response(start, media_type="text/javascript")
