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
import re
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence

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
from backends.types import ENDPOINTS, Endpoint, Timeouts, UpstreamErrorBody, UpstreamErrorEnvelope, UsagePeek


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
        secrets: Sequence[str] = (),
    ) -> None:
        """`secrets`: more URLs whose credentials never reach a client or a log (the proxy's)."""
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
        self.redactor = Redactor([s for url in (base_url, *secrets) for s in secrets_of(api_key, headers, url)])
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
        if body.startswith(b'{"error"') and peek.usage is None and (error := _answered_error(self.name, body, self.redactor)):
            raise error
        return Completion(self.redactor.body(_finish_reasons(body)), peek.usage)

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
                    if b'"error"' in data and (error := _event_error(self._backend.name, data, redactor)) is not None:
                        raise error
                    yield redactor.body(_finish_reasons(data))
        raise UpstreamProtocolError(f"upstream '{self._backend.name}' ended the stream without [DONE]")

    async def aclose(self) -> None:
        await self._response.aclose()


_TGI_REASONS = (
    (b'"finish_reason":"stop_sequence"', b'"finish_reason":"stop"'),
    (b'"finish_reason":"eos_token"', b'"finish_reason":"stop"'),
)


def _finish_reasons(data: bytes) -> bytes:
    """OpenAI's finish reason for TGI's own: its chat API says `stop_sequence` when a stop string
    ended the answer (router/src/lib.rs, `FinishReason::format`), which OpenAI calls `stop`."""
    if b'stop_sequence"' in data or b'eos_token"' in data:
        for theirs, ours in _TGI_REASONS:
            data = data.replace(theirs, ours)
    return data


def _status_error(name: str, response: httpx.Response, body: bytes, redactor: Redactor) -> APIError:
    """An upstream's error status, rebuilt: its message, code and param with every secret blanked,
    the gateway's own type; the whole body (redacted) kept for the log."""
    message, code, param, _ = _error_fields(body, redactor)
    message = _without_traceback(message or f"upstream '{name}' answered HTTP {response.status_code}")
    status = response.status_code
    if status == 500 and (invalid := _validation_error(message)) is not None:
        (message, param), status, code = invalid, 400, "invalid_request"  # llama-cpp-python's 500 for a bad field
    if is_context_overflow(status, message, code):
        error: APIError = ContextWindowExceeded(message, param=param)
    else:
        error = UpstreamStatusError(name, status, message, code, _retry_after(response.headers), param=param)
    error.upstream = (name, response.status_code, redactor.text(body[:4000].decode("utf-8", "replace")))
    return error


def _answered_error(name: str, body: bytes, redactor: Redactor) -> APIError | None:
    """An error sent with status 200 (LM Studio for a path it does not serve): the upstream's
    failure, not an answer."""
    message, _, _, _ = _error_fields(body, redactor)
    if message is None:
        return None
    error = UpstreamError(f"upstream '{name}' answered 200 with an error: {_without_traceback(message)}")
    error.upstream = (name, 200, redactor.text(body[:4000].decode("utf-8", "replace")))
    return error


def _event_error(name: str, data: bytes, redactor: Redactor) -> APIError | None:
    """An upstream's in-band error event, as the error it reports (rebuilt, redacted): `{"error":
    ...}` alone, or beside a chunk's fields (OpenRouter ends a broken stream with a chunk that has
    `error` and `finish_reason: "error"`). None: an ordinary event that happens to mention "error".
    An error that names a client's status (4xx but 408, 409, 429) is the client's, as it would be
    before the stream began; any other is the upstream's fault."""
    message, code, param, status = _error_fields(data, redactor)
    if message is None and code is None:
        return None
    message = _without_traceback(message or f"upstream '{name}' sent an error event")
    error: APIError
    if is_context_overflow(status or 400, message, code):
        error = ContextWindowExceeded(message, param=param)
    elif status is not None and status < 500 and status not in (408, 409, 429):
        error = UpstreamStatusError(name, status, message, code, param=param)
    else:
        error = StreamErrorEvent(message)
    error.upstream = (name, 200, redactor.text(data[:4000].decode("utf-8", "replace")))
    return error


_TRACEBACK = re.compile(r"\n\s*(?:Traceback \(most recent call last\)|File \"[^\"]*\", line \d+)", re.S)
_VALIDATION = re.compile(r"^\d+ validation errors?:")
_FIELD = re.compile(r"'loc': \('body', '([^']{1,100})'[^}]*?'msg': '([^']{1,300})'")


def _without_traceback(message: str) -> str:
    """An upstream's message without the Python traceback some servers append (llama-cpp-python
    adds the file and line of its handler): their internals are not the client's business."""
    found = _TRACEBACK.search(message)
    return message[: found.start()].rstrip() if found else message


def _validation_error(message: str) -> tuple[str, str | None] | None:
    """(message, param) of a pydantic validation report sent as a 500, which llama-cpp-python does
    for a request field of the wrong type: the client's fault, not the server's."""
    if not _VALIDATION.match(message):
        return None
    fields = _FIELD.findall(message)
    if not fields:
        return None
    return "; ".join(f"{field}: {why}" for field, why in fields), fields[0][0]


def _error_fields(body: bytes, redactor: Redactor) -> tuple[str | None, str | None, str | None, int | None]:
    """The message, code and param of an error body, in any of the shapes the servers send (see
    `UpstreamErrorEnvelope`), with every secret of the deployment (and any bearer credential)
    blanked: they go to the client. Last, the HTTP status the error names, if it names one (a
    numeric `code`, TGI's `http_status_code`), which an in-stream error has no other way to say."""
    try:
        envelope = msgspec.json.decode(body, type=UpstreamErrorEnvelope)
    except msgspec.DecodeError:
        return None, None, None, None
    error = envelope.error
    if error is None and envelope.object == "error" and envelope.message:
        error = UpstreamErrorBody(message=envelope.message, code=envelope.code, param=envelope.param)
    if error is None:
        return None, None, None, None
    if isinstance(error, str):
        return redactor.text(error) or None, None, None, None
    named = error.http_status_code if isinstance(error.http_status_code, int) else error.code
    status = named if isinstance(named, int) and not isinstance(named, bool) and 400 <= named <= 599 else None
    code = None if error.code is None or error.code == status else redactor.text(str(error.code))[:200]
    param = redactor.text(str(error.param))[:200] if error.param else None
    return redactor.text(str(error.message)) or None, code, param, status


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
