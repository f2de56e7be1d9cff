"""One request on its way through the pipeline: what each step learned, for the steps after it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from backends.types import Endpoint, Usage
from gateway.access.keys import Principal
from gateway.access.limits import Admission
from gateway.cache.service import Embedded, Lookup
from gateway.http.replies import Headers
from gateway.request import ClientRequest
from gateway.routing.dispatcher import Progress
from gateway.routing.pools import Deployment, Pool
from gateway.routing.retry import Deadline
from gateway.routing.router import Route, Router
from gateway.runtime import Runtime
from gateway.telemetry.stats import Tally
from gateway.telemetry.tracing import NULL_TRACE, Trace


@dataclass(slots=True, eq=False)
class Exchange:
    """Filled in step by step; the fields without a default are set by the step that admits the
    request (`request`, `deadline`) and the one that routes it (`pool`, `chain`, `model`)."""

    endpoint: Endpoint
    headers: Headers
    """The client's request headers."""
    runtime: Runtime
    """The config the request started on; it holds it until it ends."""
    request_id: str = ""
    """The `x-request-id` the answer carries."""
    started: float = field(default_factory=time.perf_counter)
    trace: Trace = NULL_TRACE
    tally: Tally = field(default_factory=Tally)
    progress: Progress = field(default_factory=Progress)
    principal: Principal | None = None
    """The client's key (None with auth off)."""
    request: ClientRequest = field(init=False)
    deadline: Deadline = field(init=False)
    pool: Pool = field(init=False)
    """The pool that answers first."""
    chain: list[Pool] = field(init=False)
    """The pools to try, in order: the first, its fallbacks, with a router the tiers above."""
    model: str = field(init=False)
    """The model name sent upstream (a deployment's own `model` wins)."""
    router: Router | None = None
    """The router of the model asked for (None for a pool asked for by name)."""
    route: Route | None = None
    """The router's decision."""
    embedded: Embedded | None = None
    admission: Admission | None = None
    output_cap: int | None = None
    """The output limit the limits granted a request that set none (None: the deployment's own, if any)."""
    output_limited: bool | None = None
    """The client set its own output limit (None: not looked at yet)."""
    reserved: Usage | None = None
    """The usage the reservation stands for: charged for an upstream call cut off before it told its own."""
    abandoned: list[Deployment] = field(default_factory=list)
    """Upstream calls given up while the upstream may have been generating (the deadline, the client left)."""
    lookup: Lookup | None = None
    limit_headers: Headers = field(default_factory=list)
    relayed: bool = False
    """A stream's relay finishes the request (when the client has had it all, or has left)."""

    @property
    def tiers(self) -> tuple[str, ...] | None:
        """The tiers the client's key may use (None: all)."""
        return None if self.principal is None else self.principal.tiers

    def reply_headers(self) -> Headers:
        """What every answer of this request carries beyond its own: the route's and the limits'."""
        if self.route is None:
            return self.limit_headers
        return [*self.route.headers(), *self.limit_headers]
