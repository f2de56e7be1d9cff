"""Litestar's side of the HTTP surface: JSON responses for the ordinary handlers, and the
exception handlers that give every error, Litestar's own included, OpenAI's shape."""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException
from litestar.types import ExceptionHandlersMap

from gateway.errors import APIError, InvalidRequest, MethodNotAllowed, NotFound
from gateway.http.replies import error_reply

log = logging.getLogger("gateway")


def json_response(data: object, status: int = 200) -> Response[bytes]:
    return Response(msgspec.json.encode(data), status_code=status, media_type="application/json")


def error_response(exc: APIError) -> Response[bytes]:
    reply = error_reply(exc)
    headers = {k.decode(): v.decode() for k, v in reply.headers if k != b"content-type"}
    return Response(reply.body, status_code=reply.status, media_type="application/json", headers=headers)


def method_not_allowed(method: str, path: str) -> APIError:
    return MethodNotAllowed(f"Method {method} is not allowed for {path}; use POST.")


def api_error(_: Request[Any, Any, Any], exc: APIError) -> Response[bytes]:
    return error_response(exc)


def unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    log.error("unhandled error in request %s", request.scope.get("state", {}).get("request_id"), exc_info=exc)
    return error_response(APIError("The server had an error while processing your request."))


def http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    """Litestar's own errors (unknown route, wrong method, bad path parameter) in OpenAI's shape."""
    if exc.status_code == 404:
        return error_response(NotFound(f"Unknown request URL: {request.method} {request.url.path}."))
    if exc.status_code == 405:
        return error_response(method_not_allowed(request.method, request.url.path))
    return error_response(InvalidRequest(str(exc.detail), status=exc.status_code))


EXCEPTION_HANDLERS: ExceptionHandlersMap = {APIError: api_error, HTTPException: http_error, Exception: unexpected}
