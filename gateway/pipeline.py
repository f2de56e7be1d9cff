"""The request pipeline: parse, resolve the model, call a deployment, answer.

It knows nothing of HTTP framing: it turns a request body into a `Reply` (JSON) or a
`StreamReply` (SSE frames), and every failure into an OpenAI-shaped error reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from backends.errors import APIError, DeadlineExceeded
from backends.protocol import Completion, EventStream
from backends.sse import DONE_FRAME, frame
from backends.types import REQUEST_TYPES, Endpoint, Usage, UsagePeek
from gateway import controls
from gateway import request as inputs
from gateway.access.control import Access, estimate
from gateway.access.keys import Principal
from gateway.access.limits import Admission, Limits
from gateway.cache.assemble import Assembler
from gateway.cache.replay import replay_events
from gateway.cache.service import Embedded, Lookup, ResponseCache, hit_body
from gateway.errors import GatewayOverloaded, InvalidRequest, PermissionDenied
from gateway.routing.dispatcher import Call, Outcome, Progress
from gateway.routing.features import router_text
from gateway.routing.pools import Deployment, Pool
from gateway.routing.retry import Deadline
from gateway.routing.router import Route, Router
from gateway.routing.validation import breaks_schema
from gateway.runtime import Runtime
from gateway.settings import ServerSettings
from gateway.telemetry.stats import RequestStats, Tally

if TYPE_CHECKING:
    from gateway.cache.embedder import Embedder  # onnxruntime: imported only when something embeds
    from gateway.telemetry.tracing import AttemptTrace, RequestTrace, Tracing

log = logging.getLogger("gateway.pipeline")
Headers = list[tuple[bytes, bytes]]
JSON = b"application/json"


@dataclass(slots=True)
class Reply:
    status: int
    body: bytes
    headers: Headers


@dataclass(slots=True)
class StreamReply:
    headers: Headers
    frames: AsyncIterator[bytes]
    """SSE frames, ending with one `[DONE]`."""
    close: Callable[[], Awaitable[None]]
    """Releases the upstream and the request's hold on its config. The server calls it once the
    frames are sent or abandoned (even if iteration never started); calling it again does nothing."""


Opened = tuple[EventStream, AsyncIterator[bytes], "bytes | None"]
"""An upstream stream, its iterator, and its first event (None if it ended at once)."""


class Pipeline:
    """parse ─▶ resolve the model ─▶ dispatch (deployments, retries, fallbacks, deadline) ─▶ reply"""

    def __init__(
        self,
        runtime_source: Any,
        cache: ResponseCache | None = None,
        embedder: Embedder | None = None,
        tracing: Tracing | None = None,
        access: Access | None = None,
    ) -> None:
        self._source = runtime_source  # anything with a `.runtime` attribute (the Reloader)
        self._access = access or Access(runtime_source.runtime.settings)
        self._cache = cache
        self._embedder = embedder
        self._tracing = tracing  # None when tracing is off: no span, no attribute, no check per request
        self._embedding_failed = False
        self.in_flight = 0
        self.stats = RequestStats()

    async def handle(self, endpoint: Endpoint, body: bytes, headers: Headers) -> Reply | StreamReply:
        runtime = self._source.runtime.acquire()
        self.in_flight += 1
        progress = Progress()
        finished_here = True
        tr: RequestTrace | None = None
        tally = Tally()
        started = time.perf_counter()
        principal: Principal | None = None
        admission: Admission | None = None
        limit_headers: Headers = []
        try:
            if self.in_flight > runtime.settings.resilience.max_in_flight:
                raise GatewayOverloaded("The gateway is at its limit of requests in flight; retry shortly.", retry_after=1)
            if runtime.settings.auth.enabled:
                principal = await self._access.authenticate(headers, runtime.keys)
                tally.tenant = principal.alias
            payload, model, stream = parse(endpoint, body, runtime.settings.server)
            if principal is not None:
                principal.check_model(model)
            if self._tracing is not None:
                tr = self._tracing.request(endpoint, model, payload, headers)
                if tr is not None and principal is not None:
                    tr.span.set_attribute("gateway.key.alias", principal.alias)
            asked = controls.from_body(payload)
            deadline = Deadline(controls.deadline_s(runtime.settings.resilience, headers, asked))
            router = runtime.routers.get(model)
            route: Route | None = None
            embedded: Embedded | None = None
            allowed = None if principal is None else principal.tiers
            chain: list[Pool] | None = None
            if router is None:
                pool = runtime.models.resolve(model)
                if allowed is not None:
                    chain = _allowed_chain(pool, allowed)
            else:
                route, embedded = await self._route(router, payload, controls.forced_tier(headers, asked), tr, allowed)
                pool, model, chain = route.pool, _upstream_name(route.pool), route.chain
            route_headers = [] if route is None else route.headers()
            tally.model, tally.tier = pool.name, route.tier if route is not None else pool.settings.tier or ""
            if principal is not None and Limits.needed(principal):
                reserve = runtime.settings.auth.output_reserve_tokens
                admission = await self._access.limits.admit(principal, estimate(endpoint, payload, chain or [pool], reserve))
                limit_headers = admission.headers()
                route_headers = route_headers + limit_headers
            lookup = None
            if self._cache is not None:  # no coroutine and no header scan per request when the cache is off
                directive = controls.cache_directive(headers, asked)
                with _step(tr, "cache lookup"):
                    tenant = "" if principal is None else principal.tenant
                    lookup = await self._cache.lookup(endpoint, pool.name, pool.settings, payload, directive, embedded, tenant)
                if tr is not None:
                    tr.looked_up(lookup, pool.deployments[0])
            if lookup is not None and lookup.hit is not None:
                tally.saved = _saved(lookup, pool)
                cached = _cached_reply(runtime, endpoint, lookup, payload, stream)
                cached.headers += route_headers
                return cached
            cache_headers = [] if lookup is None else [(b"x-gateway-cache", lookup.outcome.encode())]
            if stream:
                hide_usage = _ask_for_usage(payload)
                attempts: list[AttemptTrace] = []
                opener = _opener(endpoint, payload, model, tr, progress, attempts)
                opened = await runtime.dispatcher.run(pool, opener, deadline, progress, chain)
                finished_here = False
                meter = _Meter(tally, started, opened.deployment, payload, hide_usage, attempts[-1] if attempts else None)
                relay = _Relay(
                    opened,
                    deadline,
                    lambda: self._finish(runtime, tr, tally, progress, started, admission),
                    self._keeper(endpoint, lookup),
                    meter,
                )
                headers = [*_SSE_HEADERS, *_route_headers(runtime, opened), *cache_headers, *route_headers]
                return StreamReply(headers, relay.frames(), relay.close)
            done = await runtime.dispatcher.run(
                pool, _completer(endpoint, payload, model, tr, progress), deadline, progress, chain
            )
            done.lease.succeed()
            if router is not None and route is not None and router.settings.validate_json and not route.shadow:
                done, route = await self._validated(
                    runtime, router, route, endpoint, payload, done, deadline, progress, tr, allowed
                )
                route_headers = route.headers() + limit_headers
            if tr is not None:
                tr.answered(tr.last_attempt)
            reply = _completion_reply(runtime, done, tally)
            reply.headers += cache_headers + route_headers
            if lookup is not None and lookup.store and self._cache is not None:
                with _step(tr, "cache store"):
                    await self._cache.store(lookup, done.value.body)
            return reply
        except APIError as exc:
            tally.status = exc.status
            if tr is not None:
                tr.failed(exc)
            return error_reply(exc, [*_progress_headers(runtime, progress), *getattr(exc, "headers", limit_headers)])
        finally:
            if finished_here:
                self._finish(runtime, tr, tally, progress, started, admission)

    async def _route(
        self,
        router: Router,
        payload: dict[str, Any],
        forced: str | None,
        tr: RequestTrace | None,
        allowed: tuple[str, ...] | None,
    ) -> tuple[Route, Embedded | None]:
        """Embed (shared with the cache) and classify; both timed for /metrics and traced."""
        began = time.perf_counter()
        with _step(tr, "embed"):
            embedded = await self._embed(payload)
        embedded_at = time.perf_counter()
        with _step(tr, "classify"):
            route = router.route(payload, None if embedded is None else embedded[1], forced, allowed=allowed)
        self.stats.steps(embedded_at - began if embedded is not None else None, time.perf_counter() - embedded_at)
        if tr is not None:
            tr.routed(route)
        return route, embedded

    async def _embed(self, payload: dict[str, Any]) -> Embedded | None:
        """The request's text and its embedding, made once and shared by the router and the cache
        (None without an embedder, or when it fails: the classifier then uses its features alone)."""
        text = router_text(payload)
        if self._embedder is None:
            if not self._embedding_failed:
                log.warning("routers classify on features alone: the embedder is built at start (restart to add it)")
            self._embedding_failed = True
            return None
        if not text:
            return None
        try:
            return text, (await self._embedder.embed([text]))[0]
        except Exception:  # routing must not fail on the embedder
            if not self._embedding_failed:
                log.exception("embedding failed; routers classify on features alone until it works")
            self._embedding_failed = True
            return None

    async def _validated(
        self,
        runtime: Runtime,
        router: Router,
        route: Route,
        endpoint: Endpoint,
        payload: dict[str, Any],
        done: Outcome[Completion],
        deadline: Deadline,
        progress: Progress,
        tr: RequestTrace | None,
        allowed: tuple[str, ...] | None,
    ) -> tuple[Outcome[Completion], Route]:
        """An answer that breaks the request's json_schema is asked again one tier up (once), if
        the client's key may use that tier."""
        above = router.above(route.tier)
        if above is None or (allowed is not None and above not in allowed):
            return done, route
        if (broken := breaks_schema(payload, done.value.body)) is None:
            return done, route
        log.info("answer broke the requested json_schema (%s); asking tier %s", broken, above)
        retried = router.route(payload, None, above, why="json_schema", allowed=allowed)
        if tr is not None:
            tr.routed(retried)
        completer = _completer(endpoint, payload, _upstream_name(retried.pool), tr, progress)
        again = await runtime.dispatcher.run(retried.pool, completer, deadline, progress, retried.chain)
        again.lease.succeed()
        return again, retried

    def _keeper(self, endpoint: Endpoint, lookup: Lookup | None) -> _Keeper | None:
        """What stores a streamed answer in the cache once it has ended well (None: not cached)."""
        if self._cache is None or lookup is None or not lookup.store:
            return None
        cache = self._cache
        return _Keeper(Assembler(chat=endpoint == "chat/completions"), lambda body: cache.store(lookup, body))

    def _finish(
        self,
        runtime: Runtime,
        tr: RequestTrace | None,
        tally: Tally,
        progress: Progress,
        started: float,
        admission: Admission | None,
    ) -> None:
        self.in_flight -= 1
        if admission is not None:
            self._access.limits.settle(admission, tally.input_tokens + tally.output_tokens, tally.cost)
        runtime.release()
        tally.attempts, tally.fallbacks = progress.attempts, progress.fallbacks
        self.stats.record(tally, time.perf_counter() - started)
        if tr is not None:
            tr.end(runtime.version)


@dataclass(slots=True)
class _Keeper:
    assembler: Assembler
    store: Callable[[bytes], Awaitable[None]]


class _Relay:
    """An opened upstream stream on its way to the client."""

    def __init__(
        self, opened: Outcome[Opened], deadline: Deadline, finish: Callable[[], None], keeper: _Keeper | None, meter: _Meter
    ) -> None:
        self._events, self._iterator, self._first = opened.value
        self._meter = meter
        self._lease = opened.lease
        self._deadline = deadline
        self._finish = finish
        self._guard: _StreamDeadline | None = None
        self._closed = False
        self._keeper = keeper

    async def frames(self) -> AsyncIterator[bytes]:
        """Each upstream event as it arrives, an error event if the upstream breaks or the
        deadline passes, and exactly one `[DONE]`."""
        self._guard = guard = _StreamDeadline(self._deadline)
        error: APIError | None = None
        try:
            if self._first is not None and self._keep(self._first):
                yield frame(self._first)
            while (data := await guard.next(self._iterator)) is not None:
                if self._keep(data):
                    yield frame(data)
            self._lease.succeed()
            if self._keeper is not None:
                with _step(self._meter.trace, "cache store"):
                    await self._keeper.store(self._keeper.assembler.body())
        except DeadlineExceeded as exc:
            error = exc
            self._lease.abandon()
            yield frame(exc.body())
        except APIError as exc:
            error = exc
            self._lease.fail(exc)
            yield frame(exc.body())
        finally:
            self._meter.ended(error)
            await self.close()
        yield DONE_FRAME

    def _keep(self, data: bytes) -> bool:
        """Note the event (usage, the cache's copy); whether the client gets it."""
        if self._keeper is not None:
            try:
                self._keeper.assembler.feed(data)
            except msgspec.DecodeError:  # not JSON: pass it on, but do not cache this answer
                self._keeper = None
        return self._meter.saw(data)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._guard is not None:
            self._guard.cancel()
        self._lease.abandon()  # the client went away (a no-op when the outcome is already in)
        try:
            await _close(self._iterator)
            await self._events.aclose()
        finally:
            self._finish()


class _Meter:
    """A stream's usage and cost, taken as its events pass. The gateway asks upstreams for the usage
    chunk even when the client did not (`hide_usage`: that chunk then stops here); an upstream
    that sends none has its tokens estimated: one per content chunk, and the prompt's JSON
    length / 4 for the input."""

    def __init__(
        self,
        tally: Tally,
        started: float,
        deployment: Deployment,
        payload: dict[str, Any],
        hide_usage: bool,
        attempt: AttemptTrace | None,
    ) -> None:
        self.tally, self.started, self.deployment, self.payload = tally, started, deployment, payload
        self.hide_usage = hide_usage
        self.attempt = attempt
        self.trace = None if attempt is None else attempt.request
        self.usage: Usage | None = None
        self.chunks = 0

    def saw(self, data: bytes) -> bool:
        if self.tally.ttft is None:
            self.tally.ttft = time.perf_counter() - self.started
        if b'"usage"' in data:
            chunk = _usage_chunk(data)
            if chunk is not None and chunk.usage is not None:
                self.usage = chunk.usage
                if self.hide_usage and not chunk.choices:
                    return False
        if b'"delta"' in data or b'"text"' in data:
            self.chunks += 1
        if self.attempt is not None:
            self.attempt.chunk(data)
        return True

    def ended(self, error: APIError | None) -> None:
        if error is not None:
            self.tally.status = error.status
        usage = self.usage or self._estimate()
        _count_usage(self.tally, usage, self.deployment)
        if self.attempt is not None:
            if self.usage is None and self.trace is not None:
                self.trace.span.set_attribute("gateway.usage.estimated", True)
            self.attempt.stream_ended(usage, error)
            self.attempt = None

    def _estimate(self) -> Usage:
        prompt = self.payload.get("messages", self.payload.get("prompt", ""))
        input_tokens = -(-len(msgspec.json.encode(prompt)) // 4)
        return Usage(prompt_tokens=input_tokens, completion_tokens=self.chunks, total_tokens=input_tokens + self.chunks)


class _StreamDeadline:
    """Ends a stream at the request's deadline with one timer for the whole stream (a timeout
    around each event would cost ~10 µs per event). The timer cancels the relay only while it is
    waiting on the upstream, never while it is handing a frame to the client."""

    def __init__(self, deadline: Deadline) -> None:
        self._deadline = deadline
        self._task = asyncio.current_task()
        self._waiting = self._expired = False
        self._timer = asyncio.get_running_loop().call_later(max(0.0, deadline.remaining()), self._expire)

    def _expire(self) -> None:
        self._expired = True
        if self._waiting and self._task is not None:
            self._task.cancel()

    async def next(self, iterator: AsyncIterator[bytes]) -> bytes | None:
        """The next upstream event, None at the end; `DeadlineExceeded` once the deadline passes."""
        if self._expired:
            raise self._deadline.error()
        self._waiting = True
        try:
            return await anext(iterator, None)
        except asyncio.CancelledError:
            if self._expired and self._task is not None and self._task.uncancel() == 0:
                raise self._deadline.error() from None
            raise
        finally:
            self._waiting = False

    def cancel(self) -> None:
        self._timer.cancel()


_SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


def _upstream_name(pool: Pool) -> str:
    """The model name a routed request carries upstream (a deployment's own `model` wins): the
    pool's first alias, else its name."""
    return pool.settings.aliases[0] if pool.settings.aliases else pool.name


def _completer(
    endpoint: Endpoint, payload: dict[str, Any], model: str, tr: RequestTrace | None, progress: Progress
) -> Call[Completion]:
    async def complete(deployment: Deployment, deadline: Deadline) -> Completion:
        payload["model"] = deployment.upstream_model(model)
        if tr is None:
            return await deployment.backend.complete(endpoint, payload, deadline.remaining())
        attempt = tr.attempt(deployment, progress, payload["model"])
        try:
            with attempt.context():
                done = await deployment.backend.complete(endpoint, payload, deadline.remaining())
        except BaseException as exc:
            attempt.failed(exc)
            raise
        attempt.succeeded(done.body, done.usage)
        return done

    return complete


def _opener(
    endpoint: Endpoint,
    payload: dict[str, Any],
    model: str,
    tr: RequestTrace | None,
    progress: Progress,
    attempts: list[AttemptTrace],
) -> Call[Opened]:
    """Open the upstream stream and wait for its first event before anything reaches the client,
    so that a failure up to here can still be retried or answered as an ordinary error. With a
    trace, each attempt's span goes into `attempts`; the relay ends the last one with the stream."""

    async def open_stream(deployment: Deployment, deadline: Deadline) -> Opened:
        payload["model"] = deployment.upstream_model(model)
        attempt = None if tr is None else tr.attempt(deployment, progress, payload["model"])
        try:
            async with asyncio.timeout(deadline.remaining()):
                if attempt is None:
                    return await _first_event(await deployment.backend.stream(endpoint, payload))
                with attempt.context():
                    opened = await _first_event(await deployment.backend.stream(endpoint, payload))
        except TimeoutError:
            error = deadline.error()
            if attempt is not None:
                attempt.failed(error)
            raise error from None
        except BaseException as exc:
            if attempt is not None:
                attempt.failed(exc)
            raise
        if attempt is not None:
            attempts.append(attempt)
        return opened

    return open_stream


async def _first_event(events: EventStream) -> Opened:
    iterator = aiter(events)
    try:
        first = await anext(iterator, None)
    except BaseException:
        await _close(iterator)
        await events.aclose()
        raise
    return events, iterator, first


def _cached_reply(
    runtime: Runtime, endpoint: Endpoint, lookup: Lookup, payload: dict[str, Any], stream: bool
) -> Reply | StreamReply:
    """A hit: the stored answer as JSON, or replayed as a stream."""
    assert lookup.hit is not None
    headers = [
        (b"x-gateway-cache", lookup.outcome.encode()),
        (b"x-gateway-cache-similarity", f"{lookup.hit.similarity:.4f}".encode()),
        (b"x-gateway-cache-key", lookup.hit.entry.key.encode()),
        (b"x-gateway-cost-usd", b"0"),
        *_progress_headers(runtime, Progress()),
    ]
    body = hit_body(lookup.hit.entry.body)
    if not stream:
        return Reply(200, body, [(b"content-type", JSON), *headers])
    frames = [frame(event) for event in replay_events(endpoint, body, payload)]
    return StreamReply([*_SSE_HEADERS, *headers], _frames([*frames, DONE_FRAME]), _nothing_to_close)


async def _frames(frames: list[bytes]) -> AsyncIterator[bytes]:
    for f in frames:
        yield f


async def _nothing_to_close() -> None:
    return None


def _completion_reply(runtime: Runtime, done: Outcome[Completion], tally: Tally) -> Reply:
    headers = [(b"content-type", JSON), *_route_headers(runtime, done)]
    usage = done.value.usage
    if usage is not None:
        _count_usage(tally, usage, done.deployment)
        headers.append((b"x-gateway-cost-usd", _usd(tally.cost)))
    return Reply(200, done.value.body, headers)


def _ask_for_usage(payload: dict[str, Any]) -> bool:
    """Ask the upstream for the usage chunk; True when the client had not (its copy is then held back)."""
    options = payload.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage"):
        return False
    payload["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
    return True


def _allowed_chain(pool: Pool, allowed: tuple[str, ...]) -> list[Pool]:
    """A pool asked for by name, for a key limited to some tiers: 403 if the pool's tier is not
    among them; its fallbacks of other tiers are left out of the chain."""
    if pool.settings.tier is not None and pool.settings.tier not in allowed:
        raise PermissionDenied(
            f"This API key may not use the {pool.settings.tier!r} tier; it may use: {', '.join(allowed) or 'none'}.",
            param="model",
            code="tier_not_allowed",
        )
    return [p for p in (pool, *pool.fallbacks) if p.settings.tier is None or p.settings.tier in allowed]


def _step(tr: RequestTrace | None, name: str) -> contextlib.AbstractContextManager[None]:
    return contextlib.nullcontext() if tr is None else tr.step(name)


def _count_usage(tally: Tally, usage: Usage, deployment: Deployment) -> None:
    tally.input_tokens, tally.output_tokens = usage.prompt_tokens, usage.completion_tokens
    tally.cost = deployment.cost(usage)


class _UsageChunk(msgspec.Struct):
    usage: Usage | None = None
    choices: list[Any] = msgspec.field(default_factory=list)


def _usage_chunk(data: bytes) -> _UsageChunk | None:
    try:
        return msgspec.json.decode(data, type=_UsageChunk)
    except msgspec.DecodeError:
        return None


def _usage_of(data: bytes) -> Usage | None:
    try:
        return msgspec.json.decode(data, type=UsagePeek).usage
    except msgspec.DecodeError:
        return None


def _saved(lookup: Lookup, pool: Pool) -> float:
    """What the stored answer would have cost from the pool's first deployment."""
    assert lookup.hit is not None
    usage = _usage_of(lookup.hit.entry.body)
    return 0.0 if usage is None else pool.deployments[0].cost(usage)


def _route_headers(runtime: Runtime, outcome: Outcome[Any]) -> Headers:
    return [(b"x-gateway-model", outcome.deployment.id.encode()), *_progress_headers(runtime, outcome.progress)]


def _progress_headers(runtime: Runtime, progress: Progress) -> Headers:
    return [
        (b"x-gateway-attempts", b"%d" % progress.attempts),
        (b"x-gateway-fallbacks", b"%d" % progress.fallbacks),
        (b"x-gateway-config-version", runtime.version_header),
    ]


async def _close(iterator: AsyncIterator[bytes]) -> None:
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        await aclose()


def parse(endpoint: Endpoint, body: bytes, limits: ServerSettings | None = None) -> tuple[dict[str, Any], str, bool]:
    """The client's JSON object (kept whole, unknown fields included), its model and stream flag,
    once it is within the server's bounds (depth, messages, text, output tokens)."""
    try:
        payload = msgspec.json.decode(body)
    except msgspec.DecodeError:
        raise InvalidRequest("We could not parse the JSON body of your request. The body must be valid JSON (UTF-8).") from None
    except RecursionError:
        raise InvalidRequest("The request's JSON is nested too deeply.") from None
    if not isinstance(payload, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    if limits is not None:
        inputs.check_body(endpoint, body, payload, limits)
    try:
        request = msgspec.convert(payload, REQUEST_TYPES[endpoint])
    except msgspec.ValidationError as exc:
        message, _, where = str(exc).partition(" - at `$")
        param = _param(message, where.rstrip("`"))
        raise InvalidRequest(f"Invalid request: {message}" + (f" (at '{param}')" if param else ""), param=param) from None
    return payload, getattr(request, "model"), bool(getattr(request, "stream", False))  # noqa: B009


def _param(message: str, where: str) -> str | None:
    """`messages[0].role` from msgspec's `$.messages[0]` and 'Object missing required field `role`'."""
    path = where.lstrip(".")
    if message.startswith("Object missing required field `"):
        missing = message.split("`")[1]
        path = f"{path}.{missing}" if path else missing
    return path or None


def error_reply(exc: APIError, headers: Headers) -> Reply:
    out = [(b"content-type", JSON), *headers]
    if exc.status in (429, 503) or exc.retry_after is not None:
        out.append((b"retry-after", str(max(1, round(exc.retry_after or 1))).encode()))
    return Reply(exc.status, exc.body(), out)


def _usd(cost: float) -> bytes:
    return (f"{cost:.10f}".rstrip("0").rstrip(".") or "0").encode()
