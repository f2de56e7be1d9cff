"""Every error a client can get back, in one hierarchy. Each class knows its HTTP status, its
OpenAI error `type` and `code`, and whether another attempt might succeed (`retryable`); raising
one anywhere on the request path ends as `{"error": {"message", "type", "param", "code"}}` with
that status (429 and 503 with `Retry-After`).

    APIError (500 api_error)                                       backends.errors: the root
    ├── InvalidRequest (400)           bad JSON, schema, bounds, controls, unknown tier
    │   └── ContextWindowExceeded      the prompt does not fit (backends; a context fallback may take it)
    ├── Unauthorized (401)             missing, wrong or expired client key; admin key
    ├── PermissionDenied (403)         a model or tier the key may not use
    ├── NotFound (404)                 unknown URL; MethodNotAllowed (405)
    │   └── ModelNotFound              no pool, alias or router of that name
    ├── PayloadTooLarge (413), UnsupportedMediaType (415)
    ├── RateLimited (429)              a key over its requests / tokens per minute
    ├── InsufficientQuota (429)        a key's budget for the day or month is spent
    ├── GatewayOverloaded (429)        resilience.max_in_flight requests in this process
    ├── PoolSaturated (429)            every healthy deployment at max_in_flight       (falls back)
    ├── ServiceUnavailable (503)       a store (keys, limits, cache) did not answer
    ├── PoolUnavailable (503)          every deployment's breaker is open               (falls back)
    ├── DeadlineExceeded (504)         the request's own time budget ran out
    ├── UpstreamError (502, retryable) and its kinds: UpstreamUnavailable, UpstreamTimeout (504),
    │                                  UpstreamProtocolError, StreamErrorEvent
    └── UpstreamStatusError            the upstream's own status and message (retryable: 408, 409, 429, 5xx)

The upstream kinds live in `backends.errors` (backends never import the gateway); the rest here.
Foreign exceptions (httpx, redis, msgspec, onnxruntime) are translated into these where they are met.
"""

from __future__ import annotations

from backends.errors import (
    APIError,
    ContextWindowExceeded,
    DeadlineExceeded,
    StreamErrorEvent,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
    UpstreamUnavailable,
)

__all__ = [
    "APIError",
    "ContextWindowExceeded",
    "DeadlineExceeded",
    "GatewayOverloaded",
    "InsufficientQuota",
    "InvalidRequest",
    "MethodNotAllowed",
    "ModelNotFound",
    "NotFound",
    "PayloadTooLarge",
    "PermissionDenied",
    "PoolSaturated",
    "PoolUnavailable",
    "RateLimited",
    "ServiceUnavailable",
    "StreamErrorEvent",
    "Unauthorized",
    "UnsupportedMediaType",
    "UpstreamError",
    "UpstreamProtocolError",
    "UpstreamStatusError",
    "UpstreamTimeout",
    "UpstreamUnavailable",
]


class InvalidRequest(APIError):
    status = 400
    type = "invalid_request_error"


class Unauthorized(APIError):
    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class PermissionDenied(APIError):
    status = 403
    type = "permission_error"
    code = "permission_denied"


class NotFound(APIError):
    status = 404
    type = "invalid_request_error"
    code = "unknown_url"


class MethodNotAllowed(APIError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class ModelNotFound(NotFound):
    code = "model_not_found"


class PayloadTooLarge(APIError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class UnsupportedMediaType(APIError):
    status = 415
    type = "invalid_request_error"
    code = "unsupported_media_type"


class RateLimited(APIError):
    """A key over its requests or tokens per minute (OpenAI's shape: type `requests` / `tokens`)."""

    status = 429
    type = "requests"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, kind: str, retry_after: float, headers: list[tuple[bytes, bytes]]) -> None:
        super().__init__(message, retry_after=retry_after)
        self.type = kind
        self.headers = headers


class InsufficientQuota(APIError):
    status = 429
    type = "insufficient_quota"
    code = "insufficient_quota"


class GatewayOverloaded(APIError):
    """The gateway already has `resilience.max_in_flight` requests in flight."""

    status = 429
    type = "rate_limit_error"
    code = "gateway_overloaded"


class PoolSaturated(APIError):
    """Every healthy deployment of the pool has `max_in_flight` requests already."""

    status = 429
    type = "rate_limit_error"
    code = "pool_saturated"


class ServiceUnavailable(APIError):
    status = 503
    type = "api_error"
    code = "service_unavailable"
    retryable = True


class PoolUnavailable(APIError):
    """Every deployment of the pool has its breaker open."""

    status = 503
    code = "no_healthy_deployment"
