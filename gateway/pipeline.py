"""The request pipeline: one request from its body to its reply, in named steps.

    admit ─▶ route ─▶ reserve ─▶ look up ─▶ hit: answer from the cache
                                          └▶ dispatch ─▶ stream (relayed as it arrives)
                                                     └▶ complete (checked, stored, answered)

It knows nothing of HTTP framing: it turns a request body into a `Reply` (JSON) or a
`StreamReply` (SSE frames), and every failure into an OpenAI-shaped error reply.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import msgspec

from backends.protocol import Completion
from backends.sse import DONE_FRAME, frame
from backends.types import Endpoint, UsagePeek
from gateway import request as requests
from gateway.access.control import Access, counted, limit_output, output_limit, reservation
from gateway.access.counters import Ask
from gateway.access.keys import Principal
from gateway.access.limits import Limits
from gateway.access.tokens import over_window
from gateway.cache.assemble import Assembler
from gateway.cache.replay import replay_events
from gateway.cache.service import Embedded, ResponseCache, hit_body
from gateway.errors import APIError, DeadlineExceeded, GatewayOverloaded, PermissionDenied
from gateway.exchange import Exchange
from gateway.http.replies import SSE_HEADERS, Headers, Reply, StreamReply, error_reply, json_reply, replayed, usd
from gateway.routing.dispatcher import Call, Outcome, Progress
from gateway.routing.outcomes import DecisionLog
from gateway.routing.pools import Deployment, Pool
from gateway.routing.retry import Deadline
from gateway.routing.router import Router
from gateway.routing.task import routed_text, task
from gateway.routing.validation import breaks_schema
from gateway.runtime import Runtime
from gateway.streaming import Keeper, Meter, Prepare, Relay, ask_for_usage, opener
from gateway.telemetry.stats import RequestStats
from gateway.telemetry.tracing import Tracing

if TYPE_CHECKING:
    from gateway.cache.embedder import Embedder  # onnxruntime: imported only when something embeds

log = logging.getLogger("gateway.pipeline")


class RuntimeSource(Protocol):
    """Where the live config comes from (the `Reloader`)."""

    @property
    def runtime(self) -> Runtime: ...


class Pipeline:
    def __init__(
        self,
        source: RuntimeSource,
        tracing: Tracing,
        access: Access,
        cache: ResponseCache | None = None,
        embedder: Embedder | None = None,
        decisions: DecisionLog | None = None,
    ) -> None:
        self._source = source
        self._decisions = decisions
        self._tracing = tracing
        self._access = access
        self._cache = cache
        self._embedder = embedder
        self._embedding_failed = False
        self.in_flight = 0
        self.stats = RequestStats()

    async def authenticate(self, headers: Headers) -> Principal | None:
        """The caller's key (None with auth off), or the 401 / 503 that refuses it. The HTTP layer
        asks before it reads or checks the body, so that a caller without a key learns nothing else."""
        runtime = self._source.runtime
        if not runtime.settings.auth.enabled:
            return None
        return await self._access.authenticate(headers, runtime.keys)

    async def handle(
        self,
        endpoint: Endpoint,
        body: bytes,
        headers: Headers,
        request_id: str = "",
        caller: Principal | APIError | None = None,
    ) -> Reply | StreamReply:
        """One request. `caller`: the key `authenticate` found, or the error that refused the
        request before its body was read (it is answered and counted like any other)."""
        ex = Exchange(endpoint, headers, self._source.runtime.acquire(), request_id)
        self.in_flight += 1
        try:
            if isinstance(caller, APIError):
                raise caller
            await self._admit(ex, body, caller)
            if (router := ex.runtime.routers.get(ex.request.model)) is None:
                self._resolve(ex)
            else:
                await self._route(ex, router)
            if ex.principal is not None and Limits.needed(ex.principal):
                await self._reserve(ex, ex.principal)
            if self._cache is not None:
                await self._look_up(ex, self._cache)
            if ex.lookup is not None and ex.lookup.hit is not None:
                return self._from_cache(ex)
            if ex.request.stream:
                return await self._stream(ex)
            return await self._complete(ex)
        except APIError as exc:
            return self._failed(ex, exc)
        finally:
            if not ex.relayed:
                self._finish(ex)

    async def _admit(self, ex: Exchange, body: bytes, caller: Principal | None) -> None:
        """Room in this process, the client's key, a valid request the key may make, its trace."""
        settings = ex.runtime.settings
        if self.in_flight > settings.resilience.max_in_flight:
            raise GatewayOverloaded("The gateway is at its limit of requests in flight; retry shortly.", retry_after=1)
        if caller is None and settings.auth.enabled:
            caller = await self._access.authenticate(ex.headers, ex.runtime.keys)
        if caller is not None:
            ex.principal = caller
            ex.tally.tenant = caller.alias
        ex.request = requests.parse(ex.endpoint, body, ex.headers, settings.server, settings.resilience)
        if ex.principal is not None:
            ex.principal.check_model(ex.request.model)
        ex.trace = self._tracing.request(ex.endpoint, ex.request.model, ex.request.payload, ex.headers)
        if ex.principal is not None:
            ex.trace.keyed(ex.principal.alias)
        ex.deadline = Deadline(ex.request.controls.deadline_s)

    def _resolve(self, ex: Exchange) -> None:
        """A pool asked for by name, and the chain behind it."""
        ex.pool, ex.model = ex.runtime.models.resolve(ex.request.model, ex.endpoint), ex.request.model
        ex.chain = [ex.pool, *ex.pool.fallbacks] if ex.tiers is None else _allowed_chain(ex.pool, ex.tiers)
        ex.tally.model, ex.tally.tier = ex.pool.name, ex.pool.settings.tier or ""
        if self._decisions is not None and (tier := ex.pool.settings.tier):  # maybe a retry on a larger tier
            for router in ex.runtime.routers.values():
                if tier in router.tiers and router.pools[router.tiers.index(tier)] is ex.pool:
                    self._decisions.asked_again(router.name, router.tiers, tier, ex.request.payload)

    async def _route(self, ex: Exchange, router: Router) -> None:
        """A router's decision: embed the instruction (shared with the cache when it is the whole
        last turn), classify, and the tier's chain."""
        ex.router = router
        began = time.perf_counter()
        found = task(ex.request.payload)  # read once: for the embedding and for the features
        with ex.trace.step("embed"):
            ex.embedded = await self._embed(routed_text(ex.request.payload, found))
        embedded_at = time.perf_counter()
        with ex.trace.step("classify"):
            vector = None if ex.embedded is None else ex.embedded[1]
            ex.route = router.route(ex.request.payload, vector, ex.request.controls.tier, allowed=ex.tiers, found=found)
        self.stats.steps(embedded_at - began if ex.embedded is not None else None, time.perf_counter() - embedded_at)
        ex.trace.routed(ex.route)
        ex.pool, ex.chain, ex.model = ex.route.pool, ex.route.chain, _upstream_name(ex.route.pool)
        ex.tally.model, ex.tally.tier = ex.pool.name, ex.route.tier
        if self._decisions is not None:
            route = ex.route
            score = None if route.decision is None else route.decision.score
            self._decisions.decided(ex.request_id, router.name, router.tiers, route.tier, route.why, score, ex.request.payload)

    async def _reserve(self, ex: Exchange, principal: Principal) -> None:
        """A key with limits or budgets reserves the request's worst case before it goes upstream;
        a request that sets no output limit is given the one its key can pay for."""
        if not (principal.tpm or principal.budget):  # requests per minute only: no tokens to count, no output to cap
            ex.admission = await self._access.limits.admit(principal, Ask(0, 0.0))
            ex.limit_headers = ex.admission.headers()
            return
        least = ex.runtime.settings.auth.min_output_tokens
        prompt = await counted(ex.endpoint, ex.request.payload, ex.chain, ex.model)
        reserved = reservation(ex.endpoint, ex.request.payload, ex.chain, least, prompt)
        ex.admission = await self._access.limits.admit(principal, reserved.ask)
        ex.output_cap = reserved.output_cap(ex.admission.extra)
        ex.reserved = reserved.usage(ex.admission.extra)
        ex.limit_headers = ex.admission.headers()

    async def _look_up(self, ex: Exchange, cache: ResponseCache) -> None:
        tenant = "" if ex.principal is None else ex.principal.tenant
        with ex.trace.step("cache lookup"):
            ex.lookup = await cache.lookup(
                ex.runtime.settings.cache,
                ex.endpoint,
                ex.pool.name,
                ex.pool.settings,
                ex.request.payload,
                ex.request.controls.cache,
                ex.embedded,
                tenant,
            )
        ex.trace.looked_up(ex.lookup, ex.pool.deployments[0])

    def _from_cache(self, ex: Exchange) -> Reply | StreamReply:
        """A hit: the stored answer as JSON, or replayed as a stream."""
        assert ex.lookup is not None and ex.lookup.hit is not None
        hit = ex.lookup.hit
        ex.tally.saved = _saved(hit.entry.body, ex.pool)
        headers = [
            (b"x-gateway-cache", ex.lookup.outcome.encode()),
            (b"x-gateway-cache-similarity", f"{hit.similarity:.4f}".encode()),
            (b"x-gateway-cache-key", hit.entry.key.encode()),
            *([(b"x-gateway-cache-score", repr(hit.score).encode())] if hit.score is not None else []),
            (b"x-gateway-cost-usd", b"0"),
            *_progress_headers(ex.runtime, Progress()),
            *ex.reply_headers(),
        ]
        body = hit_body(hit.entry.body)
        if not ex.request.stream:
            return json_reply(body, headers)
        events = replay_events(ex.endpoint, body, ex.request.payload)
        return replayed([*(frame(e) for e in events), DONE_FRAME], headers)

    async def _stream(self, ex: Exchange) -> StreamReply:
        """Open the upstream stream (retries and fallbacks up to its first event), then relay it."""
        hide_usage = ask_for_usage(ex.request.payload)
        attempt = _watched(ex, opener(ex.endpoint, ex.request.payload, ex.model, self._prepare(ex)))
        call = ex.trace.stream_openings(attempt, ex.progress, ex.model)
        opened = await self._dispatch(ex, call)
        self._note_escalation(ex, opened.deployment)
        meter = Meter(ex.tally, ex.started, opened.deployment, ex.endpoint, ex.request.payload, hide_usage, ex.reserved)
        relay = Relay(opened, ex.deadline, meter, self._keeper(ex), ex.trace, lambda: self._finish(ex))
        ex.relayed = True
        headers = [*SSE_HEADERS, *_answer_headers(ex.runtime, opened), *_cache_outcome(ex), *ex.reply_headers()]
        read_on = ex.runtime.settings.auth.meter_after_disconnect_s if ex.admission is not None else 0.0
        return StreamReply(headers, relay.frames(), relay.close, read_on, relay.cut)

    async def _complete(self, ex: Exchange) -> Reply:
        """The whole answer: checked against a requested json_schema, stored in the cache, answered."""
        done = await self._dispatch(ex, self._completer(ex))
        done.lease.succeed()
        self._note_escalation(ex, done.deployment)
        if ex.router is not None and ex.router.settings.validate_json:
            done = await self._validated(ex, ex.router, done)
        usage = done.value.usage
        headers = _answer_headers(ex.runtime, done)
        if usage is not None:
            ex.tally.count(usage, done.deployment)
            headers.append((b"x-gateway-cost-usd", usd(ex.tally.cost)))
        if ex.lookup is not None and ex.lookup.store and self._cache is not None:
            with ex.trace.step("cache store"):
                await self._cache.store(ex.lookup, done.value.body)
        return json_reply(done.value.body, [*headers, *_cache_outcome(ex), *ex.reply_headers()])

    def _note_escalation(self, ex: Exchange, deployment: Deployment) -> None:
        """A routed request answered by a tier above its own (its tier's pools failed), for the routing log."""
        router, route = ex.router, ex.route
        if self._decisions is None or router is None or route is None or route.shadow:
            return
        for index, pool in enumerate(router.pools):
            if any(deployment in p.deployments for p in (pool, *pool.fallbacks)):
                if index > router.tiers.index(route.tier):
                    self._decisions.outcome(ex.request_id, router.name, router.tiers[index], "escalated")
                return

    async def _dispatch(self, ex: Exchange, call: Call[Any]) -> Outcome[Any]:
        return await ex.runtime.dispatcher.run(ex.pool, call, ex.deadline, ex.progress, ex.chain)

    def _completer(self, ex: Exchange) -> Call[Completion]:
        """One attempt at the whole answer on a deployment (traced, when the request is)."""
        endpoint, payload, model, prepare = ex.endpoint, ex.request.payload, ex.model, self._prepare(ex)

        async def complete(deployment: Deployment, deadline: Deadline) -> Completion:
            payload["model"] = deployment.upstream_model(model)
            if prepare is not None:
                prepare(deployment)
            if deployment.settings.context_window is not None:
                await over_window(deployment, endpoint, payload, model, prepare is not None)
            return await deployment.backend.complete(endpoint, payload, deadline.remaining())

        return ex.trace.completions(_watched(ex, complete), ex.progress, model)

    @staticmethod
    def _prepare(ex: Exchange) -> Prepare | None:
        """The output limit of each attempt, for a request that sets none (see `limit_output`)."""
        if ex.output_cap is None and not any(pool.caps_output for pool in ex.chain):
            return None  # nothing to set
        if ex.output_limited is None:
            ex.output_limited = output_limit(ex.request.payload) is not None  # before any attempt adds one
        if ex.output_limited:
            return None
        return functools.partial(limit_output, ex.endpoint, ex.request.payload, cap=ex.output_cap)

    async def _validated(self, ex: Exchange, router: Router, done: Outcome[Completion]) -> Outcome[Completion]:
        """An answer that breaks the request's json_schema is asked again one tier up (once), if
        the client's key may use that tier."""
        assert ex.route is not None
        above = router.above(ex.route.tier)
        if ex.route.shadow or above is None or (ex.tiers is not None and above not in ex.tiers):
            return done
        if (broken := breaks_schema(ex.request.payload, done.value.body)) is None:
            return done
        log.info("answer broke the requested json_schema (%s); asking tier %s", broken, above)
        if done.value.usage is not None:  # the first answer is paid for too
            ex.tally.count(done.value.usage, done.deployment)
        if self._decisions is not None:
            self._decisions.outcome(ex.request_id, router.name, above, "json_schema")
        ex.route = router.route(ex.request.payload, None, above, why="json_schema", allowed=ex.tiers)
        ex.trace.routed(ex.route)
        ex.pool, ex.chain, ex.model = ex.route.pool, ex.route.chain, _upstream_name(ex.route.pool)
        again = await self._dispatch(ex, self._completer(ex))
        again.lease.succeed()
        return again

    async def _embed(self, text: str | None) -> Embedded | None:
        """A text the router reads and its embedding; the cache reuses it when it compares the same
        text (None without an embedder, or when it fails: the classifier then uses its features alone)."""
        if self._embedder is None:
            if not self._embedding_failed:
                log.warning("routers classify on features alone: the embedder is built at start (restart to add it)")
            self._embedding_failed = True
            return None
        if text is None:
            return None
        try:
            return text, (await self._embedder.embed([text]))[0]
        except Exception:  # routing must not fail on the embedder
            if not self._embedding_failed:
                log.exception("embedding failed; routers classify on features alone until it works")
            self._embedding_failed = True
            return None

    def _keeper(self, ex: Exchange) -> Keeper | None:
        """What stores a streamed answer in the cache once it has ended well (None: not cached)."""
        cache, lookup = self._cache, ex.lookup
        if cache is None or lookup is None or not lookup.store:
            return None
        return Keeper(Assembler(chat=ex.endpoint == "chat/completions"), functools.partial(cache.store, lookup))

    def _failed(self, ex: Exchange, exc: APIError) -> Reply:
        ex.tally.status = exc.status
        if exc.upstream is not None:  # the client gets the rebuilt error; the log, the upstream's own (redacted)
            name, status, body = exc.upstream
            log.warning("request %s: upstream %s answered %d: %s", ex.request_id, name, status, body)
        ex.trace.failed(exc)
        return error_reply(exc, [*_progress_headers(ex.runtime, ex.progress), *getattr(exc, "headers", ex.limit_headers)])

    def _finish(self, ex: Exchange) -> None:
        """The request has ended: settle its reservation, count it, end its trace, release its config."""
        self.in_flight -= 1
        if ex.reserved is not None:
            for deployment in ex.abandoned:  # calls cut off before they told their usage: what they were asked for
                ex.tally.count(ex.reserved, deployment)
        if ex.admission is not None:
            self._access.limits.settle(ex.admission, ex.tally.input_tokens + ex.tally.output_tokens, ex.tally.cost)
        ex.runtime.release()
        ex.tally.attempts, ex.tally.fallbacks = ex.progress.attempts, ex.progress.fallbacks
        self.stats.record(ex.tally, time.perf_counter() - ex.started)
        ex.trace.end(ex.runtime.version)


T = TypeVar("T")


def _watched(ex: Exchange, call: Call[T]) -> Call[T]:
    """For a request with a reservation, an attempt that notes when it is given up while the
    upstream may be generating: the request's deadline passed, or its client left (the task is
    cancelled)."""
    if ex.admission is None:
        return call

    async def attempt(deployment: Deployment, deadline: Deadline) -> T:
        try:
            return await call(deployment, deadline)
        except (DeadlineExceeded, asyncio.CancelledError):
            ex.abandoned.append(deployment)
            raise

    return attempt


def _upstream_name(pool: Pool) -> str:
    """The model name a routed request carries upstream (a deployment's own `model` wins): the
    pool's first alias, else its name."""
    return pool.settings.aliases[0] if pool.settings.aliases else pool.name


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


def _saved(stored: bytes, pool: Pool) -> float:
    """What a stored answer would have cost from the pool's first deployment."""
    try:
        usage = msgspec.json.decode(stored, type=UsagePeek).usage
    except msgspec.DecodeError:
        return 0.0
    return 0.0 if usage is None else pool.deployments[0].cost(usage)


def _cache_outcome(ex: Exchange) -> Headers:
    return [] if ex.lookup is None else [(b"x-gateway-cache", ex.lookup.outcome.encode())]


def _answer_headers(runtime: Runtime, outcome: Outcome[Any]) -> Headers:
    return [(b"x-gateway-model", outcome.deployment.id.encode()), *_progress_headers(runtime, outcome.progress)]


def _progress_headers(runtime: Runtime, progress: Progress) -> Headers:
    return [
        (b"x-gateway-attempts", b"%d" % progress.attempts),
        (b"x-gateway-fallbacks", b"%d" % progress.fallbacks),
        (b"x-gateway-config-version", runtime.version_header),
    ]
