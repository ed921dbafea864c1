"""Puts the portal into the app: its routes, static files, error pages and security headers."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles

from dupify.config import Settings
from dupify.portal import (
    routes_account,
    routes_admin,
    routes_auth,
    routes_keys,
    routes_playground,
    routes_privacy,
    routes_supabase,
    routes_usage,
)
from dupify.portal.context import exception_handlers
from dupify.portal.headers import SecurityHeadersMiddleware

STATIC = Path(__file__).parent / "static"


def install_portal(app: FastAPI, settings: Settings) -> None:
    for module in (
        routes_auth,
        routes_keys,
        routes_usage,
        routes_playground,
        routes_account,
        routes_admin,
        routes_privacy,
        routes_supabase,
    ):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    for exception, handler in exception_handlers().items():
        app.add_exception_handler(exception, handler)
    app.add_middleware(SecurityHeadersMiddleware, settings=settings.portal)
