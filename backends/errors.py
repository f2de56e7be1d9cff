"""The one error hierarchy: every error knows its HTTP status, OpenAI error type and retryability.

Foreign exceptions (httpx, msgspec, ...) are translated into these at the adapter that meets
them; nothing else crosses a module boundary. The gateway adds request-side subclasses.
"""

from __future__ import annotations

import msgspec


class APIError(Exception):
    """An error that becomes an OpenAI-shaped `{"error": {...}}` response."""

    status: int = 500
    type: str = "api_error"
    code: str | None = None
    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.upstream: tuple[str, int, str] | None = None
        """For an upstream's error: (deployment, status, its body redacted), for the log."""
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.retry_after = retry_after

    def body(self) -> bytes:
        """The JSON body of the error response."""
        return msgspec.json.encode(
            {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}
        )


class DeadlineExceeded(APIError):
    """The request's time budget ran out (the gateway's deadline, not an upstream timeout)."""

    status = 504
    code = "deadline_exceeded"


class UpstreamError(APIError):
    """The upstream failed in a way that another attempt might not."""

    status = 502
    code = "upstream_error"
    retryable = True


class UpstreamUnavailable(UpstreamError):
    """No connection could be made to the upstream."""

    code = "upstream_unavailable"


class UpstreamTimeout(UpstreamError):
    """The upstream did not answer in time."""

    status = 504
    code = "upstream_timeout"


class UpstreamProtocolError(UpstreamError):
    """The upstream answered something that is not a valid response, or broke the connection."""

    code = "bad_upstream_response"


class ContextWindowExceeded(APIError):
    """The prompt (with max_tokens) does not fit the model's context window. The client's request,
    not the upstream, is at fault; a pool with a larger window may still take it."""

    status = 400
    type = "invalid_request_error"
    code = "context_length_exceeded"


_CONTEXT_PHRASES = (
    "context length",
    "context window",
    "context_length",
    "maximum context",
    "too many tokens",
    "prompt is too long",
    "`inputs` tokens + `max_new_tokens` must be <=",  # TGI (router/src/validation.rs)
    "`inputs` must have less than",  # TGI
    "exceeds the available context size",  # llama.cpp's llama-server
)


def is_context_overflow(status: int, message: str, code: str | None) -> bool:
    """How OpenAI, vLLM, TGI, SGLang, TensorRT-LLM and llama.cpp say that a prompt is too long
    (docs/upstreams.md)."""
    if status not in (400, 413, 422):
        return False
    lowered = message.lower()
    return code == "context_length_exceeded" or any(p in lowered for p in _CONTEXT_PHRASES)


class StreamErrorEvent(UpstreamError):
    """The upstream answered 200, then sent an error event instead of (or among) the chunks."""

    code = "upstream_stream_error"


# OpenAI's error type for each status an upstream may send back.
_TYPES = {
    400: "invalid_request_error",
    404: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}
_RETRYABLE = {408, 409, 429}


class UpstreamStatusError(APIError):
    """The upstream answered with an error status; its message is passed on.

    A 401/403 from an upstream means the gateway's own credentials are wrong, which is not the
    client's fault: it becomes a 502 that says so.
    """

    def __init__(
        self,
        deployment: str,
        status: int,
        message: str,
        code: str | None = None,
        retry_after: float | None = None,
        param: str | None = None,
    ) -> None:
        if status in (401, 403, 407):
            message = f"upstream '{deployment}' rejected the gateway's credentials (HTTP {status})"
            status, code, param = 502, "upstream_auth_failed", None
        elif status == 402:  # the gateway's account there is out of credits (OpenRouter): not the client's doing
            message = f"upstream '{deployment}' refused the gateway's account: {message} (HTTP 402)"
            status, code, param = 502, "upstream_payment_required", None
        elif status == 424:  # TGI: "Request failed during generation" (its fault, not the request's)
            status = 502
        super().__init__(message, status=status, code=code, retry_after=retry_after, param=param)
        self.type = _TYPES.get(status, "api_error")
        self.retryable = status in _RETRYABLE or status >= 500
