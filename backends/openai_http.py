"""The OpenAI-compatible HTTP backend: vLLM, TGI, SGLang, Ollama, llama.cpp, LM Studio, OpenAI...

One pooled keep-alive connection set per upstream. Requests are built as `httpx.Request`s from a
pre-parsed base URL and handed straight to the transport: the `AsyncClient` layer (URL merging,
cookies, auth flows, event hooks, per-request logging) roughly halves throughput and adds nothing
a proxy needs. Any httpx transport fits; the default is `PooledTransport` (see transport.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import time
from collections.abc import AsyncIterator, Iterator, Mapping

import httpx
import msgspec

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
    is_context_overflow,
)
from backends.propagation import UPSTREAM_TRACE
from backends.protocol import Completion
from backends.redact import Redactor, secrets_of
from backends.sse import DONE, SSEParser
from backends.transport import PooledTransport
from backends.types import ENDPOINTS, Endpoint, Timeouts, UpstreamErrorEnvelope, UsagePeek


class HTTPBackend:
    """Talks to one OpenAI-compatible upstream at `base_url` (ending before `/chat/completions`)."""

    endpoints = ENDPOINTS

    def __init__(
        self,
        name: str,
        base_url: str,
        *,
        api_key: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeouts: Timeouts | None = None,
        max_connections: int = 256,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
        self.name = name
        self.timeouts = timeouts or Timeouts()
        self._transport = transport or PooledTransport(max_connections=max_connections, max_keepalive=max_connections)
        base = base_url.rstrip("/")
        self._urls = {e: httpx.URL(f"{base}/{e}") for e in ("chat/completions", "completions", "embeddings")}
        self._headers = httpx.Headers({"content-type": "application/json", "user-agent": "llm-gateway", **(headers or {})})
        if api_key:
            self._headers["authorization"] = f"Bearer {api_key}"
        self.redactor = Redactor(secrets_of(api_key, headers, base_url))
        t = self.timeouts
        self._extensions = {"timeout": {"connect": t.connect, "read": t.read, "write": t.read, "pool": t.pool}}

    async def complete(self, endpoint: Endpoint, payload: dict[str, object], timeout: float | None = None) -> Completion:
        total = self.timeouts.total
        budget = total if timeout is None else min(total, timeout)
        with self._translated():
            try:
                async with asyncio.timeout(budget):  # one timer for both limits: each costs ~10 µs
                    response = await self._send(endpoint, payload)
                    body = await response.aread()
            except TimeoutError:
                if budget < total:
                    raise DeadlineExceeded(f"The request did not complete within its deadline ({timeout:g}s left).") from None
                raise UpstreamTimeout(f"upstream '{self.name}' did not answer within {total:g}s") from None
        if response.status_code != 200:
            raise _status_error(self.name, response, body, self.redactor)
        try:
            peek = msgspec.json.decode(body, type=UsagePeek)
        except msgspec.DecodeError:
            raise UpstreamProtocolError(f"upstream '{self.name}' sent a response that is not a JSON object") from None
        return Completion(self.redactor.body(body), peek.usage)

    async def stream(self, endpoint: Endpoint, payload: dict[str, object]) -> HTTPEventStream:
        with self._translated():
            response = await self._send(endpoint, payload)
            if response.status_code != 200:
                try:
                    body = await response.aread()
                finally:
                    await response.aclose()
                raise _status_error(self.name, response, body, self.redactor)
        return HTTPEventStream(self, response)

    async def aclose(self) -> None:
        await self._transport.aclose()

    async def _send(self, endpoint: Endpoint, payload: dict[str, object]) -> httpx.Response:
        request = httpx.Request(
            "POST", self._urls[endpoint], headers=self._headers, content=msgspec.json.encode(payload), extensions=self._extensions
        )
        if (trace_headers := UPSTREAM_TRACE.get()) is not None:  # a traced attempt: tell the upstream
            for name, value in trace_headers.items():  # on the request's own copy: copying and merging cost 4 µs
                request.headers[name] = value
        return await self._transport.handle_async_request(request)

    @contextlib.contextmanager
    def _translated(self) -> Iterator[None]:
        """Turn httpx's exceptions into the gateway's error hierarchy."""
        try:
            yield
        except httpx.TimeoutException as exc:
            kind = "connect to" if isinstance(exc, httpx.ConnectTimeout) else "get an answer from"
            raise UpstreamTimeout(f"timed out trying to {kind} upstream '{self.name}'") from None
        except httpx.ConnectError:
            raise UpstreamUnavailable(f"could not connect to upstream '{self.name}'") from None
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
            raise UpstreamProtocolError(f"upstream '{self.name}' broke the connection: {self.redactor.text(str(exc))}") from None
        except httpx.HTTPError as exc:
            raise UpstreamError(f"upstream '{self.name}' failed: {type(exc).__name__}") from None


class HTTPEventStream:
    """The `data` payloads of an upstream's SSE answer, as they arrive."""

    def __init__(self, backend: HTTPBackend, response: httpx.Response) -> None:
        self._backend = backend
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        parser = SSEParser()
        redactor = self._backend.redactor
        with self._backend._translated():
            async for chunk in self._response.aiter_raw():
                for data in parser.feed(chunk):
                    if data == DONE:
                        return
                    if data.startswith(b'{"error"'):
                        raise _event_error(self._backend.name, data, redactor)
                    yield redactor.body(data)
        raise UpstreamProtocolError(f"upstream '{self._backend.name}' ended the stream without [DONE]")

    async def aclose(self) -> None:
        await self._response.aclose()


def _status_error(name: str, response: httpx.Response, body: bytes, redactor: Redactor) -> APIError:
    """An upstream's error status, rebuilt: its message, code and param with every secret blanked,
    the gateway's own type; the whole body (redacted) kept for the log."""
    message, code, param = _error_fields(body, redactor)
    message = message or f"upstream '{name}' answered HTTP {response.status_code}"
    if is_context_overflow(response.status_code, message, code):
        error: APIError = ContextWindowExceeded(message, param=param)
    else:
        error = UpstreamStatusError(name, response.status_code, message, code, _retry_after(response.headers), param=param)
    error.upstream = (name, response.status_code, redactor.text(body[:4000].decode("utf-8", "replace")))
    return error


def _event_error(name: str, data: bytes, redactor: Redactor) -> APIError:
    """An upstream's in-band `{"error": ...}` event, as the error it reports (rebuilt, redacted)."""
    message, code, param = _error_fields(data, redactor)
    message = message or f"upstream '{name}' sent an error event"
    overflow = is_context_overflow(400, message, code)
    error: APIError = ContextWindowExceeded(message, param=param) if overflow else StreamErrorEvent(message)
    error.upstream = (name, 200, redactor.text(data[:4000].decode("utf-8", "replace")))
    return error


def _error_fields(body: bytes, redactor: Redactor) -> tuple[str | None, str | None, str | None]:
    """The message, code and param of an OpenAI-style error body, where it is one, with every
    secret of the deployment (and any bearer credential) blanked: they go to the client."""
    try:
        envelope = msgspec.json.decode(body, type=UpstreamErrorEnvelope)
    except msgspec.DecodeError:
        return None, None, None
    if envelope.error is None:
        return None, None, None
    if isinstance(envelope.error, str):
        return redactor.text(envelope.error) or None, None, None
    error = envelope.error
    code = redactor.text(str(error.code))[:200] if error.code is not None else None
    param = redactor.text(str(error.param))[:200] if error.param else None
    return redactor.text(error.message) or None, code, param


def _retry_after(headers: httpx.Headers) -> float | None:
    """Seconds to wait, from `retry-after-ms`, or `Retry-After` in seconds or as an HTTP date."""
    if ms := headers.get("retry-after-ms"):
        with contextlib.suppress(ValueError):
            return max(0.0, float(ms) / 1000)
    value = headers.get("retry-after")
    if not value:
        return None
    with contextlib.suppress(ValueError):
        return max(0.0, float(value))
    with contextlib.suppress(TypeError, ValueError):
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    return None
