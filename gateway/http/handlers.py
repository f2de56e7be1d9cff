"""HTTP handlers. The OpenAI endpoints are raw ASGI handlers (the hot path: no per-request
framework machinery); everything else is an ordinary Litestar handler. All are thin."""

from __future__ import annotations

import contextlib
import hmac
import importlib.metadata
import ipaddress
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec
from litestar import Request, Response, delete, get, post
from litestar.handlers import ASGIRouteHandler, asgi

from backends.types import Endpoint
from gateway.access.control import Access
from gateway.access.keys import KeyExists, KeyRequest, KeysUnavailable, Principal, RedisKeys
from gateway.cache.service import ResponseCache
from gateway.cache.store import StoreUnavailable
from gateway.errors import APIError, InvalidRequest, NotFound, ServiceUnavailable, Unauthorized
from gateway.http import openapi
from gateway.http.asgi import ClientGone, Receive, Scope, Send, read_body, send_reply, send_stream, until_disconnect
from gateway.pipeline import Pipeline, Reply, StreamReply, error_reply
from gateway.reloader import Reloader
from gateway.request import check_content_type
from gateway.routing.breaker_sync import BreakerSync
from gateway.telemetry import metrics
from gateway.telemetry.health import deployment_health
from gateway.telemetry.tracing import Tracing

if TYPE_CHECKING:
    from gateway.cache.embedder import Embedder


class Gateway:
    """What the handlers share: the live config and the pipeline."""

    def __init__(self, reloader: Reloader) -> None:
        self.reloader = reloader
        settings = reloader.runtime.settings
        self.embedder: Embedder | None = None
        if settings.cache.enabled or settings.routers:  # built at start: turning either on later takes a restart
            from gateway.cache.embedder import OnnxEmbedder

            self.embedder = OnnxEmbedder(settings.cache.embedder)
        self.cache = (
            ResponseCache(settings.cache, self.embedder, settings.redis) if self.embedder and settings.cache.enabled else None
        )
        self.tracing = Tracing(settings.telemetry)
        self.access = Access(settings)
        self.pipeline = Pipeline(reloader, self.cache, self.embedder, self.tracing if self.tracing.enabled else None, self.access)
        self.draining = False
        self.metrics = metrics.registry(
            lambda: reloader.runtime,
            lambda: self.pipeline.in_flight,
            self.cache,
            self.embedder,
            self.tracing,
            self.pipeline.stats,
            self.access.limits,
        )
        self.breaker_sync = BreakerSync(lambda: reloader.runtime)


def openai_route(gateway: Gateway, path: str, endpoint: Endpoint) -> ASGIRouteHandler:
    async def handle(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "POST":
            return await send_reply(send, error_reply(method_not_allowed(scope["method"], path), []))
        limit = gateway.reloader.runtime.settings.server.max_body_bytes
        try:
            check_content_type(scope["headers"])
            body = await read_body(scope, receive, limit)
        except ClientGone:
            return None
        except APIError as exc:
            return await send_reply(send, error_reply(exc, []))
        reply = await until_disconnect(receive, gateway.pipeline.handle(endpoint, body, scope["headers"]))
        if reply is None:
            return None
        if isinstance(reply, StreamReply):
            return await send_stream(receive, send, reply)
        return await send_reply(send, reply)

    return asgi(path, name=endpoint, copy_scope=False)(handle)


def method_not_allowed(method: str, path: str) -> APIError:
    return NotFound(f"Method {method} is not allowed for {path}; use POST.", code="method_not_allowed", status=405)


def _json(data: object, status: int = 200) -> Response[bytes]:
    return Response(msgspec.json.encode(data), status_code=status, media_type="application/json")


def _model(name: str, created: int) -> dict[str, object]:
    return {"id": name, "object": "model", "created": created, "owned_by": "llm-gateway"}


async def _caller(gateway: Gateway, request: Request[Any, Any, Any]) -> Principal | None:
    """The key of a request to a `/v1/*` endpoint (None with auth off)."""
    runtime = gateway.reloader.runtime
    if not runtime.settings.auth.enabled:
        return None
    return await gateway.access.authenticate(request.scope["headers"], runtime.keys)


def routes(gateway: Gateway) -> list[Any]:
    @get("/v1/models")
    async def list_models(request: Request[Any, Any, Any]) -> Response[bytes]:
        """The models the caller's key may use."""
        caller = await _caller(gateway, request)
        runtime = gateway.reloader.runtime
        names = sorted(n for n in [*runtime.models.names, *runtime.routers] if caller is None or caller.may_use(n))
        return _json({"object": "list", "data": [_model(n, runtime.loaded_at) for n in names]})

    @get("/v1/models/{model_id:path}")
    async def get_model(request: Request[Any, Any, Any], model_id: str) -> Response[bytes]:
        caller = await _caller(gateway, request)
        runtime = gateway.reloader.runtime
        name = model_id.lstrip("/")
        if caller is not None:
            caller.check_model(name)
        if name not in runtime.routers:
            runtime.models.resolve(name)  # raises the 404
        return _json(_model(name, runtime.loaded_at))

    @get("/openapi.json", sync_to_thread=False)
    def openapi_document() -> Response[bytes]:
        """This gateway's OpenAPI document, with the bounds of the live config."""
        return _json(openapi.document(gateway.reloader.runtime.settings, _VERSION))

    @get("/health/liveness", sync_to_thread=False)
    def liveness() -> Response[bytes]:
        return _json({"status": "draining"}, 503) if gateway.draining else _json({"status": "ok"})

    @get("/health/readiness", sync_to_thread=False)
    def readiness() -> Response[bytes]:
        runtime = gateway.reloader.runtime
        ready = not gateway.draining
        body = {"status": "ok" if ready else "draining", "config_version": runtime.version, "pools": len(runtime.pools)}
        return _json(body, 200 if ready else 503)

    @get("/admin/config", sync_to_thread=False)
    def admin_config(request: Request[Any, Any, Any]) -> Response[bytes]:
        _authorize_admin(gateway, request)
        runtime = gateway.reloader.runtime
        return _json({"version": runtime.version, "path": gateway.reloader.path, "loaded_at": runtime.loaded_at})

    @get("/admin/breakers", sync_to_thread=False)
    def admin_breakers(request: Request[Any, Any, Any]) -> Response[bytes]:
        """Every deployment's breaker state, window counts, load and latency."""
        _authorize_admin(gateway, request)
        return _json({"data": [h.as_dict() for h in deployment_health(gateway.reloader.runtime)]})

    @get("/admin/cache")
    async def admin_cache(request: Request[Any, Any, Any]) -> Response[bytes]:
        _authorize_admin(gateway, request)
        return _json(await _cache(gateway).stats())

    @post("/admin/cache/flush", status_code=200)
    async def admin_cache_flush(request: Request[Any, Any, Any]) -> Response[bytes]:
        """Body `{"namespace": "small"}` flushes pool small's entries (a full namespace name works
        too); an empty body flushes everything."""
        _authorize_admin(gateway, request)
        body = _admin_body(await request.body(), _Flush)
        with _store_errors():
            return _json({"removed": await _cache(gateway).flush(body.namespace)})

    @post("/admin/cache/feedback", status_code=200)
    async def admin_cache_feedback(request: Request[Any, Any, Any]) -> Response[bytes]:
        """Body `{"key": "<x-gateway-cache-key of a wrong hit>"}`: the entry is removed and counted."""
        _authorize_admin(gateway, request)
        body = _admin_body(await request.body(), _Feedback)
        with _store_errors():
            return _json({"removed": await _cache(gateway).report_wrong(body.key)})

    @get("/metrics", sync_to_thread=False)
    def prometheus() -> Response[bytes]:
        return Response(metrics.render(gateway.metrics), media_type=metrics.CONTENT_TYPE)

    @post("/admin/config/reload")
    async def admin_reload(request: Request[Any, Any, Any]) -> Response[bytes]:
        _authorize_admin(gateway, request)
        result = await gateway.reloader.reload()
        if result.problems:
            message = "The config file was rejected; the running config is unchanged.\n" + "\n".join(result.problems)
            return _json(
                {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": "invalid_config"}}, 400
            )
        return _json({"version": result.version, "changed": result.changed})

    endpoints: list[tuple[str, Endpoint]] = [
        ("/v1/chat/completions", "chat/completions"),
        ("/v1/completions", "completions"),
        ("/v1/embeddings", "embeddings"),
    ]
    hot = [openai_route(gateway, path, endpoint) for path, endpoint in endpoints]
    admin = [admin_config, admin_breakers, admin_reload, admin_cache, admin_cache_flush, admin_cache_feedback]
    admin += key_routes(gateway)
    return [*hot, list_models, get_model, openapi_document, liveness, readiness, *admin, prometheus]


def key_routes(gateway: Gateway) -> list[Any]:
    """`/admin/keys`: make (the secret is shown once), list, read with spend, and revoke client keys.
    Made keys live in Redis; the config's keys are listed and read, and changed in the config."""

    def stored() -> RedisKeys:
        if gateway.access.keys is None:
            raise InvalidRequest(
                "Keys can be made through the admin API only with Redis (redis.url); write them in auth.keys instead.",
                code="key_store_not_configured",
            )
        return gateway.access.keys

    @post("/admin/keys", status_code=201)
    async def create_key(request: Request[Any, Any, Any]) -> Response[bytes]:
        _authorize_admin(gateway, request)
        asked = _admin_body(await request.body(), KeyRequest)
        runtime = gateway.reloader.runtime
        known = {*runtime.models.names, *runtime.routers}
        for model in asked.models or []:
            if model not in known:
                raise InvalidRequest(f"No model named {model!r}.", param="models")
        tiers = {p.settings.tier for p in runtime.pools if p.settings.tier} | {
            t for r in runtime.routers.values() for t in r.tiers
        }
        for tier in asked.tiers or []:
            if tier not in tiers:
                raise InvalidRequest(f"No pool or router has a tier {tier!r}.", param="tiers")
        if any(p.alias == asked.alias for p in runtime.keys.by_id.values()):
            raise InvalidRequest(f"The alias {asked.alias!r} belongs to a key in the config.", param="alias", status=409)
        with _key_store_errors():
            try:
                secret, principal = await stored().create(asked, time.time())
            except KeyExists:
                raise InvalidRequest(f"A key with alias {asked.alias!r} exists.", param="alias", status=409) from None
        return _json({"key": secret, **principal.as_dict()}, 201)

    @get("/admin/keys")
    async def list_keys(request: Request[Any, Any, Any]) -> Response[bytes]:
        _authorize_admin(gateway, request)
        found = list(gateway.reloader.runtime.keys.by_id.values())
        if gateway.access.keys is not None:
            with _key_store_errors():
                found += await gateway.access.keys.all()
        return _json({"object": "list", "data": [p.as_dict() for p in found]})

    @get("/admin/keys/{key_id:str}")
    async def read_key(request: Request[Any, Any, Any], key_id: str) -> Response[bytes]:
        """The key and what it has spent in each budget period (settled and reserved)."""
        _authorize_admin(gateway, request)
        principal = await _find_key(gateway, key_id)
        return _json({**principal.as_dict(), "spent": await gateway.access.limits.usage(principal)})

    @delete("/admin/keys/{key_id:str}", status_code=200)
    async def revoke_key(request: Request[Any, Any, Any], key_id: str) -> Response[bytes]:
        """Refused from the next request on, by every worker and replica."""
        _authorize_admin(gateway, request)
        if key_id in gateway.reloader.runtime.keys.by_id:
            raise InvalidRequest("This key is written in the config: remove it there (and reload).", status=409)
        with _key_store_errors():
            revoked = await stored().revoke(key_id)
        if revoked is None:
            raise NotFound(f"No key with id {key_id[:100]!r}.", code="key_not_found")
        return _json({"id": key_id, "alias": revoked.alias, "revoked": True})

    return [create_key, list_keys, read_key, revoke_key]


async def _find_key(gateway: Gateway, key_id: str) -> Principal:
    found = gateway.reloader.runtime.keys.by_id.get(key_id)
    if found is None and gateway.access.keys is not None:
        with _key_store_errors():
            found = next((p for p in await gateway.access.keys.all() if p.id == key_id), None)
    if found is None:
        raise NotFound(f"No key with id {key_id[:100]!r}.", code="key_not_found")
    return found


def _key_store_errors() -> contextlib.AbstractContextManager[None]:
    return _unavailable(KeysUnavailable, "The key store", "key_store_unavailable")


class _Flush(msgspec.Struct, forbid_unknown_fields=True):
    namespace: str | None = None


class _Feedback(msgspec.Struct, forbid_unknown_fields=True):
    key: str


T = TypeVar("T")
try:
    _VERSION = importlib.metadata.version("llm-gateway")
except importlib.metadata.PackageNotFoundError:  # running from a checkout that is not installed
    _VERSION = "0+unknown"


def _admin_body(raw: bytes, kind: type[T]) -> T:
    try:
        return msgspec.json.decode(raw or b"{}", type=kind)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise InvalidRequest(f"Invalid request body: {exc}") from None


def _store_errors() -> contextlib.AbstractContextManager[None]:
    return _unavailable(StoreUnavailable, "The cache store", "cache_store_unavailable")


@contextlib.contextmanager
def _unavailable(kind: type[Exception], what: str, code: str) -> Iterator[None]:
    """A store's failure, as the 503 an admin call answers with."""
    try:
        yield
    except kind as exc:
        raise ServiceUnavailable(f"{what} did not answer ({exc}); try again.", code=code) from exc


def _cache(gateway: Gateway) -> ResponseCache:
    if gateway.cache is None:
        raise NotFound("The response cache is off (cache.enabled in the config).", code="cache_disabled")
    return gateway.cache


def _authorize_admin(gateway: Gateway, request: Request[Any, Any, Any]) -> None:
    key = gateway.reloader.runtime.settings.admin.api_key
    if key is None or not key.reveal():
        host = request.client.host if request.client else ""
        if not _is_loopback(host):
            raise Unauthorized("The admin API is open to loopback clients only unless admin.api_key is set.")
        return
    given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
    if not hmac.compare_digest(given.encode(), key.reveal().encode()):
        raise Unauthorized("A valid admin key is required (Authorization: Bearer ...).")


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def error_response(exc: APIError) -> Response[bytes]:
    reply: Reply = error_reply(exc, [])
    headers = {k.decode(): v.decode() for k, v in reply.headers if k != b"content-type"}
    return Response(reply.body, status_code=reply.status, media_type="application/json", headers=headers)
