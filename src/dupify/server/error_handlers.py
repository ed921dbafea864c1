"""The one error envelope on the wire: every exception, ours or the framework's, answered as it."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from dupify.errors import ApiError, invalid_request_from
from dupify.server.middleware import context_of


def error_response(request: Request, error: ApiError) -> JSONResponse:
    ctx = context_of(request.state)
    ctx.error_code = error.code
    return JSONResponse(error.body(ctx.request_id), status_code=error.status, headers=error.headers)


def _from_http_exception(exc: StarletteHTTPException) -> ApiError:
    headers = dict(exc.headers or {})
    if exc.status_code == 404:
        return ApiError("not_found", "No such route.", headers=headers)
    if exc.status_code == 405:
        return ApiError("method_not_allowed", "Method not allowed on this route.", headers=headers)
    if exc.status_code == 413:
        return ApiError("payload_too_large", str(exc.detail), headers=headers)
    if exc.status_code == 415:
        return ApiError("unsupported_media_type", str(exc.detail), headers=headers)
    if exc.status_code >= 500:
        return ApiError("internal_error", "Internal error.", headers=headers)
    return ApiError("invalid_request", str(exc.detail), headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Route every exception, ours or the framework's, into the one envelope."""

    async def on_api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return error_response(request, exc)

    async def on_http_exception(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        return error_response(request, _from_http_exception(exc))

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(request, invalid_request_from(exc.errors()))

    async def on_client_disconnect(request: Request, exc: Exception) -> JSONResponse:
        # Nobody reads this answer; it is for the usage row and the metrics.
        gone = ApiError("invalid_request", "the client closed the connection mid-body")
        return error_response(request, gone)

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(ClientDisconnect, on_client_disconnect)
    app.add_exception_handler(StarletteHTTPException, on_http_exception)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    # Unexpected exceptions are answered by RequestContextMiddleware, which also logs the row.
