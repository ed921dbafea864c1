"""Test helper: what the app's OpenAPI document promises (its operations, the image routes, each
operation's documented statuses), read from an app built without starting it."""

from __future__ import annotations

from functools import cache
from typing import Any

from dupify.app import create_app
from support.settings import make_settings


@cache
def openapi_document() -> dict[str, Any]:
    """The document /openapi.json serves; building it starts nothing (no lifespan runs)."""
    return create_app(make_settings("sqlite://")).openapi()


def operations(document: dict[str, Any]) -> list[tuple[str, str]]:
    """Every documented (METHOD, path), in the document's order."""
    return [
        (method.upper(), path) for path, methods in document["paths"].items() for method in methods
    ]


def image_routes(document: dict[str, Any]) -> list[str]:
    """The paths of the operations tagged `images` (those that take image bodies)."""
    return [
        path
        for method, path in operations(document)
        if "images" in document["paths"][path][method.lower()].get("tags", [])
    ]


def documented_statuses(document: dict[str, Any], method: str, path: str) -> set[int]:
    return {int(status) for status in document["paths"][path][method.lower()]["responses"]}


def documented_media_types(document: dict[str, Any], method: str, path: str) -> list[str]:
    operation = document["paths"][path][method.lower()]
    return list(operation.get("requestBody", {}).get("content", {}))
