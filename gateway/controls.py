"""Per-request controls: `x-gateway-*` request headers, and the same in a `gateway` object in the
JSON body (for clients that can only add fields, e.g. the openai client's `extra_body`). The
`gateway` object is removed before the request goes upstream; a header wins over the body."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

import msgspec

from gateway.errors import InvalidRequest
from gateway.settings import ResilienceSettings

DEADLINE_HEADER = b"x-gateway-deadline-ms"
TIER_HEADER = b"x-gateway-tier"


CacheDirective = Literal["no-cache", "no-store"]


class Controls(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    deadline_ms: Annotated[float, msgspec.Meta(gt=0)] | None = None
    """This request's time budget in milliseconds (capped at `resilience.max_deadline_s`)."""
    cache: CacheDirective | None = None
    """`no-cache`: do not answer from the cache (the answer is still stored); `no-store`: neither."""
    tier: Annotated[str, msgspec.Meta(min_length=1, max_length=100)] | None = None
    """With a router's model name: this tier, whatever the classifier says."""


NO_CONTROLS = Controls()


def from_body(payload: dict[str, Any]) -> Controls:
    raw = payload.pop("gateway", None)
    if raw is None:
        return NO_CONTROLS
    try:
        return msgspec.convert(raw, Controls)
    except msgspec.ValidationError as exc:
        message, _, where = str(exc).partition(" - at `$")
        param = "gateway" + where.rstrip("`")
        raise InvalidRequest(f"Invalid gateway controls: {message} (at '{param}')", param=param) from None


def deadline_s(settings: ResilienceSettings, headers: list[tuple[bytes, bytes]], controls: Controls) -> float:
    """The request's deadline in seconds: header, else body, else the config default."""
    ms = controls.deadline_ms
    for name, value in headers:
        if name == DEADLINE_HEADER:
            ms = _milliseconds(value)
    if ms is None:
        return settings.deadline_s
    return min(ms / 1000, settings.max_deadline_s)


def cache_directive(headers: list[tuple[bytes, bytes]], controls: Controls) -> CacheDirective | None:
    """`no-store` or `no-cache` from the Cache-Control header (the stronger one wins), else the body's."""
    for name, value in headers:
        if name == b"cache-control":
            directives = {d.strip() for d in value.decode("latin-1").lower().split(",")}
            if "no-store" in directives:
                return "no-store"
            if "no-cache" in directives:
                return "no-cache"
    return controls.cache


def forced_tier(headers: list[tuple[bytes, bytes]], controls: Controls) -> str | None:
    """The tier a request asks for: the x-gateway-tier header, else the body's."""
    for name, value in headers:
        if name == TIER_HEADER:
            return value.decode("latin-1").strip()
    return controls.tier


def _milliseconds(value: bytes) -> float:
    try:
        ms = float(value)
    except ValueError:
        ms = math.nan
    if not ms > 0 or math.isinf(ms):
        raise InvalidRequest(
            "The x-gateway-deadline-ms header must be a positive number of milliseconds.", param="x-gateway-deadline-ms"
        )
    return ms
