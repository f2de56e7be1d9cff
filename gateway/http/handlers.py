"""HTTP handlers of the traffic port. The OpenAI endpoints are raw ASGI handlers (the hot path: no
per-request framework machinery); everything else is an ordinary Litestar handler. All are thin."""

from __future__ import annotations

import importlib.metadata
from typing import Any

from litestar import Request, Response, get
from litestar.handlers import ASGIRouteHandler, asgi

from backends.types import Endpoint
from gateway.access.keys import Principal
from gateway.errors import APIError
from gateway.http import openapi
from gateway.http.admin import admin_routes
from gateway.http.asgi import ClientGone, Receive, Scope, Send, read_body, send_reply, send_stream, until_disconnect
from gateway.http.replies import StreamReply, error_reply
from gateway.http.responses import json_response, method_not_allowed
from gateway.request import check_content_type
from gateway.services import Services
from gateway.telemetry import metrics

try:
    _VERSION = importlib.metadata.version("llm-gateway")
except importlib.metadata.PackageNotFoundError:  # running from a checkout that is not installed
    _VERSION = "0+unknown"


def routes(services: Services) -> list[Any]:
    endpoints: list[tuple[str, Endpoint]] = [
        ("/v1/chat/completions", "chat/completions"),
        ("/v1/completions", "completions"),
        ("/v1/embeddings", "embeddings"),
    ]
    hot = [openai_route(services, path, endpoint) for path, endpoint in endpoints]
    return [*hot, *model_routes(services), *health_routes(services), *admin_routes(services)]


def openai_route(services: Services, path: str, endpoint: Endpoint) -> ASGIRouteHandler:
    async def handle(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "POST":
            return await send_reply(send, error_reply(method_not_allowed(scope["method"], path)))
        limit = services.reloader.runtime.settings.server.max_body_bytes
        caller: Principal | APIError | None = None
        body = b""
        try:  # the key first: a caller without one learns nothing about the body
            caller = await services.pipeline.authenticate(scope["headers"])
            check_content_type(scope["headers"])
            body = await read_body(scope, receive, limit)
        except ClientGone:
            return None
        except APIError as exc:
            caller = exc
        request_id = scope.get("state", {}).get("request_id", "")
        work = services.pipeline.handle(endpoint, body, scope["headers"], request_id, caller)
        reply = await until_disconnect(receive, work)
        if reply is None:
            return None
        if isinstance(reply, StreamReply):
            return await send_stream(receive, send, reply)
        return await send_reply(send, reply)

    return asgi(path, name=endpoint, copy_scope=False)(handle)


def model_routes(services: Services) -> list[Any]:
    @get("/v1/models")
    async def list_models(request: Request[Any, Any, Any]) -> Response[bytes]:
        """The models the caller's key may use."""
        caller = await _caller(services, request)
        runtime = services.reloader.runtime
        names = sorted(n for n in [*runtime.models.names, *runtime.routers] if caller is None or caller.may_use(n))
        return json_response({"object": "list", "data": [_model(n, runtime.loaded_at) for n in names]})

    @get("/v1/models/{model_id:path}")
    async def get_model(request: Request[Any, Any, Any], model_id: str) -> Response[bytes]:
        caller = await _caller(services, request)
        runtime = services.reloader.runtime
        name = model_id.lstrip("/")
        if caller is not None:
            caller.check_model(name)
        if name not in runtime.routers:
            runtime.models.resolve(name)  # raises the 404
        return json_response(_model(name, runtime.loaded_at))

    return [list_models, get_model]


def health_routes(services: Services) -> list[Any]:
    @get("/openapi.json", sync_to_thread=False)
    def openapi_document() -> Response[bytes]:
        """This gateway's OpenAPI document, with the bounds of the live config."""
        return json_response(openapi.document(services.reloader.runtime.settings, _VERSION))

    @get("/health/liveness", sync_to_thread=False)
    def liveness() -> Response[bytes]:
        return json_response({"status": "draining"}, 503) if services.draining else json_response({"status": "ok"})

    @get("/health/readiness", sync_to_thread=False)
    def readiness() -> Response[bytes]:
        runtime = services.reloader.runtime
        ready = not services.draining
        body = {"status": "ok" if ready else "draining", "config_version": runtime.version, "pools": len(runtime.pools)}
        return json_response(body, 200 if ready else 503)

    @get("/metrics", sync_to_thread=False)
    def prometheus() -> Response[bytes]:
        return Response(metrics.render(services.metrics), media_type=metrics.CONTENT_TYPE)

    return [openapi_document, liveness, readiness, prometheus]


def _model(name: str, created: int) -> dict[str, object]:
    return {"id": name, "object": "model", "created": created, "owned_by": "llm-gateway"}


async def _caller(services: Services, request: Request[Any, Any, Any]) -> Principal | None:
    """The key of a request to a `/v1/*` endpoint (None with auth off)."""
    runtime = services.reloader.runtime
    if not runtime.settings.auth.enabled:
        return None
    return await services.access.authenticate(request.scope["headers"], runtime.keys)
