"""The admin API: the live config and its reload, breakers, the cache, router feedback, and client keys.

It is served on a listener of its own (`admin.host`:`admin.port`, loopback by default), never on
the traffic port unless `admin.on_traffic_port` is set: behind a load balancer or sidecar on the
same host every traffic connection arrives from loopback, so the port a request came in on, not
its peer address, is what keeps traffic out. Without `admin.api_key` it answers loopback clients
only; with one, a `Bearer` key is required (and the config refuses a listener beyond loopback, or
the traffic port, without one).
"""

from __future__ import annotations

import contextlib
import hmac
import os
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import msgspec
from litestar import Request, Response, delete, get, post

from gateway.access.keys import KeyExists, KeyRequest, KeysUnavailable, Principal, RedisKeys, bearer
from gateway.cache.service import ResponseCache
from gateway.cache.store import StoreUnavailable
from gateway.config import is_loopback
from gateway.errors import APIError, InvalidRequest, NotFound, ServiceUnavailable, Unauthorized
from gateway.http.asgi import Receive, Scope, Send, send_reply
from gateway.http.replies import error_reply
from gateway.http.responses import json_response
from gateway.telemetry.health import deployment_health

if TYPE_CHECKING:
    from gateway.services import Services

T = TypeVar("T")


ADMIN_LISTENER_ENV = "GATEWAY_ADMIN_LISTENER"
"""The admin listener, as `gateway serve` tells its workers: its port, then ` wide` when it is
bound beyond loopback."""


class Listeners:
    """Keeps `/admin/*` and traffic apart by the listener a request came in on: the admin
    listener serves `/admin/*` only, the traffic port everything but `/admin/*` (unless
    `admin.on_traffic_port`). Without `admin.api_key`, `/admin/*` is refused outright wherever a
    connection from loopback may be a proxy's (a listener beyond loopback, the traffic port), even
    if a reload took the key away."""

    def __init__(self, app: Any, gateway: Services) -> None:
        self.app = app
        self.gateway = gateway
        port, _, wide = os.environ.get(ADMIN_LISTENER_ENV, "").partition(" ")
        self.port = int(port) if port.isdigit() else None
        self.wide = wide == "wide"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            server = scope.get("server")
            on_admin = self.port is not None and server is not None and server[1] == self.port
            path: str = scope["path"]
            if path.startswith("/admin/") or path == "/admin":
                refusal = self._refusal(on_admin)
                if refusal is not None:
                    return await send_reply(send, error_reply(refusal))
            elif on_admin:
                refusal = NotFound("This is the admin listener: it serves /admin/* only; the API is on the traffic port.")
                return await send_reply(send, error_reply(refusal))
        await self.app(scope, receive, send)

    def _refusal(self, on_admin: bool) -> APIError | None:
        admin = self.gateway.reloader.runtime.settings.admin
        if not on_admin and not admin.on_traffic_port:
            return NotFound("The admin API is not served on this port: it has a listener of its own (admin.port).")
        if (self.wide or not on_admin) and admin.key() is None:
            return Unauthorized("The admin API needs admin.api_key here: it is reachable beyond loopback.")
        return None


def admin_routes(gateway: Services) -> list[Any]:
    @get("/admin/config", sync_to_thread=False)
    def admin_config(request: Request[Any, Any, Any]) -> Response[bytes]:
        _authorize_admin(gateway, request)
        reloader = gateway.reloader
        runtime = reloader.runtime
        body = {"version": runtime.version, "path": reloader.path, "loaded_at": runtime.loaded_at}
        return json_response({**body, "restart_required": reloader.restart_required()})

    @get("/admin/breakers", sync_to_thread=False)
    def admin_breakers(request: Request[Any, Any, Any]) -> Response[bytes]:
        """Every deployment's breaker state, window counts, load and latency."""
        _authorize_admin(gateway, request)
        return json_response({"data": [h.as_dict() for h in deployment_health(gateway.reloader.runtime)]})

    @get("/admin/cache")
    async def admin_cache(request: Request[Any, Any, Any]) -> Response[bytes]:
        _authorize_admin(gateway, request)
        return json_response(await _cache(gateway).stats())

    @post("/admin/cache/flush", status_code=200)
    async def admin_cache_flush(request: Request[Any, Any, Any]) -> Response[bytes]:
        """Body `{"namespace": "small"}` flushes pool small's entries (a full namespace name works
        too); an empty body flushes everything."""
        _authorize_admin(gateway, request)
        body = _admin_body(await request.body(), _Flush)
        with _store_errors():
            return json_response({"removed": await _cache(gateway).flush(body.namespace)})

    @post("/admin/cache/feedback", status_code=200)
    async def admin_cache_feedback(request: Request[Any, Any, Any]) -> Response[bytes]:
        """Body `{"key": "<x-gateway-cache-key>", "score": <x-gateway-cache-score>}` of a wrong hit:
        the entry is removed and counted, and (with the score) its namespace's verifier threshold
        rises past the score for every process sharing the store."""
        _authorize_admin(gateway, request)
        body = _admin_body(await request.body(), _Feedback)
        with _store_errors():
            return json_response(await _cache(gateway).report_wrong(body.key, body.score))

    @post("/admin/config/reload")
    async def admin_reload(request: Request[Any, Any, Any]) -> Response[bytes]:
        _authorize_admin(gateway, request)
        result = await gateway.reloader.reload()
        if result.problems:
            message = "The config file was rejected; the running config is unchanged.\n" + "\n".join(result.problems)
            return json_response(
                {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": "invalid_config"}}, 400
            )
        return json_response({"version": result.version, "changed": result.changed, "restart_required": result.restart_required})

    @post("/admin/router/feedback", status_code=200)
    async def admin_router_feedback(request: Request[Any, Any, Any]) -> Response[bytes]:
        """Body `{"request_id": "<x-request-id of a routed answer>", "tier": "large"}`: the tier
        that request needed, appended to the routing log for `gateway router-train --log`."""
        _authorize_admin(gateway, request)
        body = _admin_body(await request.body(), _RouterFeedback)
        if gateway.decisions is None:
            raise InvalidRequest(
                "The routing log is off: set routing_log.path in the config (and restart) to record feedback.",
                code="routing_log_disabled",
                status=409,
            )
        routers = gateway.reloader.runtime.routers
        named = [routers[body.router]] if body.router in routers else [] if body.router else list(routers.values())
        if body.router and not named:
            raise InvalidRequest(f"No router named {body.router[:100]!r}.", param="router")
        if not any(body.tier in r.tiers for r in named):
            known = sorted({t for r in named for t in r.tiers})
            raise InvalidRequest(f"No router has a tier {body.tier[:100]!r}; tiers: {', '.join(known) or 'none'}.", param="tier")
        gateway.decisions.outcome(body.request_id, body.router, body.tier, "feedback")
        return json_response({"request_id": body.request_id, "tier": body.tier, "logged": True})

    cache = [admin_cache, admin_cache_flush, admin_cache_feedback]
    return [admin_config, admin_breakers, admin_reload, *cache, admin_router_feedback, *key_routes(gateway)]


def key_routes(gateway: Services) -> list[Any]:
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
        return json_response({"key": secret, **principal.as_dict()}, 201)

    @get("/admin/keys")
    async def list_keys(request: Request[Any, Any, Any]) -> Response[bytes]:
        _authorize_admin(gateway, request)
        found = list(gateway.reloader.runtime.keys.by_id.values())
        if gateway.access.keys is not None:
            with _key_store_errors():
                found += await gateway.access.keys.all()
        return json_response({"object": "list", "data": [p.as_dict() for p in found]})

    @get("/admin/keys/{key_id:str}")
    async def read_key(request: Request[Any, Any, Any], key_id: str) -> Response[bytes]:
        """The key and what it has spent in each budget period (settled and reserved)."""
        _authorize_admin(gateway, request)
        principal = await _find_key(gateway, key_id)
        return json_response({**principal.as_dict(), "spent": await gateway.access.limits.usage(principal)})

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
        return json_response({"id": key_id, "alias": revoked.alias, "revoked": True})

    return [create_key, list_keys, read_key, revoke_key]


async def _find_key(gateway: Services, key_id: str) -> Principal:
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
    score: Annotated[float, msgspec.Meta(ge=0, le=1)] | None = None


class _RouterFeedback(msgspec.Struct, forbid_unknown_fields=True):
    request_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$")]
    tier: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    router: str | None = None


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


def _cache(gateway: Services) -> ResponseCache:
    if gateway.cache is None:
        raise NotFound("The response cache is off (cache.enabled in the config).", code="cache_disabled")
    return gateway.cache


def _authorize_admin(gateway: Services, request: Request[Any, Any, Any]) -> None:
    key = gateway.reloader.runtime.settings.admin.key()
    if key is None:
        host = request.client.host if request.client else ""
        if not is_loopback(host):
            raise Unauthorized("The admin API is open to loopback clients only unless admin.api_key is set.")
        return
    try:
        given = bearer(request.scope["headers"]) or ""
    except Unauthorized:
        given = ""
    if not hmac.compare_digest(given.encode(), key.encode()):
        raise Unauthorized("A valid admin key is required (Authorization: Bearer ...).")
