"""Request-side errors, on the same hierarchy as the backends' (backends.errors.APIError)."""

from __future__ import annotations

from backends.errors import APIError

__all__ = [
    "APIError",
    "GatewayOverloaded",
    "InvalidRequest",
    "NotFound",
    "PayloadTooLarge",
    "PermissionDenied",
    "ServiceUnavailable",
    "Unauthorized",
    "UnsupportedMediaType",
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


class UnsupportedMediaType(APIError):
    status = 415
    type = "invalid_request_error"
    code = "unsupported_media_type"


class NotFound(APIError):
    status = 404
    type = "invalid_request_error"
    code = "unknown_url"


class PayloadTooLarge(APIError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class ServiceUnavailable(APIError):
    status = 503
    type = "api_error"
    code = "service_unavailable"
    retryable = True


class GatewayOverloaded(APIError):
    """The gateway already has `resilience.max_in_flight` requests in flight."""

    status = 429
    type = "rate_limit_error"
    code = "gateway_overloaded"
