"""Per-request controls: `x-gateway-*` and `Cache-Control` request headers, and the same in a
`gateway` object in the JSON body (for clients that can only add fields, e.g. the openai client's
`extra_body`). The `gateway` object is removed before the request goes upstream; a header wins
over the body. Read once per request, in one pass over the headers."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import msgspec

from gateway.errors import InvalidRequest
from gateway.settings import ResilienceSettings

DEADLINE_HEADER = b"x-gateway-deadline-ms"
TIER_HEADER = b"x-gateway-tier"
CacheDirective = Literal["no-cache", "no-store"]


class BodyControls(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """The `gateway` object of a request body."""

    deadline_ms: Annotated[float, msgspec.Meta(gt=0)] | None = None
    """This request's time budget in milliseconds (capped at `resilience.max_deadline_s`)."""
    cache: CacheDirective | None = None
    """`no-cache`: do not answer from the cache (the answer is still stored); `no-store`: neither."""
    tier: Annotated[str, msgspec.Meta(min_length=1, max_length=100)] | None = None
    """With a router's model name: this tier, whatever the classifier says."""


_NONE = BodyControls()


class Controls(msgspec.Struct, frozen=True):
    """What the client asked of the gateway for this request, headers and body together."""

    deadline_s: float
    """The request's deadline: header, else body, else `resilience.deadline_s`; at most `max_deadline_s`."""
    cache: CacheDirective | None
    """From Cache-Control (`no-store` wins over `no-cache`), else the body's."""
    tier: str | None
    """From x-gateway-tier, else the body's."""


def read(headers: Sequence[tuple[bytes, bytes]], payload: dict[str, Any], settings: ResilienceSettings) -> Controls:
    """The request's controls; its body's `gateway` object is taken out of `payload`. Of a header
    sent more than once, the last counts."""
    body = _from_body(payload)
    named = dict(headers)
    ms = body.deadline_ms if (deadline := named.get(DEADLINE_HEADER)) is None else _milliseconds(deadline)
    tier = body.tier if (forced := named.get(TIER_HEADER)) is None else forced.decode("latin-1").strip()
    cache = body.cache if (control := named.get(b"cache-control")) is None else _cache_directive(control) or body.cache
    deadline_s = settings.deadline_s if ms is None else min(ms / 1000, settings.max_deadline_s)
    return Controls(deadline_s, cache, tier)


def _from_body(payload: dict[str, Any]) -> BodyControls:
    raw = payload.pop("gateway", None)
    if raw is None:
        return _NONE
    try:
        return msgspec.convert(raw, BodyControls)
    except msgspec.ValidationError as exc:
        message, _, where = str(exc).partition(" - at `$")
        param = "gateway" + where.rstrip("`")
        raise InvalidRequest(f"Invalid gateway controls: {message} (at '{param}')", param=param) from None


def _cache_directive(value: bytes) -> CacheDirective | None:
    directives = {d.strip() for d in value.decode("latin-1").lower().split(",")}
    if "no-store" in directives:
        return "no-store"
    return "no-cache" if "no-cache" in directives else None


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
