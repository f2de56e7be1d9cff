"""Typed settings: the YAML config file, validated when it is loaded.

Every struct rejects unknown keys. Cross-field rules live in `gateway.config.check`. Each
component receives its own struct (a pool its `PoolSettings`, the server its `ServerSettings`).
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from backends.openai_http import Timeouts

NonNegative = Annotated[float, msgspec.Meta(ge=0)]
Positive = Annotated[float, msgspec.Meta(gt=0)]
PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
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
    """USD per one million tokens."""

    input_per_1m: NonNegative = 0.0
    output_per_1m: NonNegative = 0.0

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.input_per_1m + output_tokens * self.output_per_1m) / 1e6


class DeploymentSettings(_Settings, frozen=True, kw_only=True):
    """One place that can answer a pool's requests."""

    id: Name
    """Unique across the config; appears in `x-gateway-model` and metrics."""
    backend: Literal["openai", "echo"] = "openai"
    """`openai`: any OpenAI-compatible HTTP server. `echo`: the built-in demo backend."""
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
    transport: Literal["pooled", "httpx"] = "pooled"
    """`pooled`: the gateway's lean HTTP/1.1 pool. `httpx`: httpx's default transport (HTTP/1.1, proxies)."""
    timeouts: Timeouts = Timeouts()
    price: Price = Price()


class PoolSettings(_Settings, frozen=True, kw_only=True):
    """A set of interchangeable deployments that clients reach by the pool's name or an alias."""

    aliases: list[Name] = msgspec.field(default_factory=list)
    strategy: Literal["weighted_round_robin", "least_in_flight"] = "weighted_round_robin"
    deployments: Annotated[list[DeploymentSettings], msgspec.Meta(min_length=1)]


class ServerSettings(_Settings, frozen=True):
    """The HTTP front door."""

    max_body_bytes: PositiveInt = 4 * 1024 * 1024
    """Larger request bodies get 413."""


class ReloadSettings(_Settings, frozen=True):
    """Hot reload of the config file."""

    watch: bool = True
    """Poll the file and reload when it changes."""
    interval_s: Positive = 1.0


class AdminSettings(_Settings, frozen=True):
    """The `/admin/*` endpoints."""

    api_key: Secret | None = None
    """Bearer key for `/admin/*`. Without one, only clients on loopback may use them."""


class Settings(_Settings, frozen=True, kw_only=True):
    """The whole config file."""

    server: ServerSettings = ServerSettings()
    reload: ReloadSettings = ReloadSettings()
    admin: AdminSettings = AdminSettings()
    pools: Annotated[dict[Name, PoolSettings], msgspec.Meta(min_length=1)]
