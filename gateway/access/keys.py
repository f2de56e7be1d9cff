"""Client keys: who is calling, and what they may call.

A key is a random secret (`sk-gw-...`) that the gateway never keeps: it keeps the key's SHA-256
(keys are 256 random bits, so a fast hash is as safe as a slow one and costs a microsecond per
request). Keys come from the config (`auth.keys`, hashes only) and from the admin API, which keeps
them in Redis so every worker and replica knows them at once; a revoked key is deleted there and
refused by the next request anywhere.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import secrets
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from redis.exceptions import RedisError

from gateway.errors import PermissionDenied, ServiceUnavailable, Unauthorized
from gateway.redis_client import tag
from gateway.settings import AuthSettings, KeySettings, Name, NonNegative, Period, PositiveInt

log = logging.getLogger("gateway.access.keys")

KEY_PREFIX = "sk-gw-"
EXPIRED_KEPT_S = 7 * 86400
"""How long an API-made key's records stay in Redis after it expires."""


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Principal:
    """A client key as the gateway knows it (no secret in it)."""

    id: str
    """`cfg:<alias>` for a key in the config, `key_<hex>` for one made through the admin API.
    Rate and spend counters are kept under it."""
    alias: str
    tenant: str
    source: Literal["config", "api"]
    models: frozenset[str] | None = None
    tiers: tuple[str, ...] | None = None
    rpm: int | None = None
    tpm: int | None = None
    budget: Mapping[str, float] = field(default_factory=dict)
    metadata: Mapping[str, str] = field(default_factory=dict)
    expires_at: float | None = None
    created_at: float | None = None

    def check_model(self, model: str) -> None:
        if self.models is not None and model not in self.models:
            raise PermissionDenied(
                f"This API key may not use the model `{model[:200]}`; it may use: {', '.join(sorted(self.models))}.",
                param="model",
                code="model_not_allowed",
            )

    def may_use(self, model: str) -> bool:
        return self.models is None or model in self.models

    def allows_tier(self, tier: str | None) -> bool:
        return self.tiers is None or tier is None or tier in self.tiers

    def record(self) -> _Record:
        return _Record(
            id=self.id,
            alias=self.alias,
            tenant=self.tenant,
            models=None if self.models is None else sorted(self.models),
            tiers=None if self.tiers is None else list(self.tiers),
            rpm=self.rpm,
            tpm=self.tpm,
            budget=dict(self.budget),
            metadata=dict(self.metadata),
            expires_at=self.expires_at,
            created_at=self.created_at,
        )

    def as_dict(self) -> dict[str, Any]:
        return {**msgspec.to_builtins(self.record()), "source": self.source}


class _Record(msgspec.Struct, kw_only=True):
    """A key's fields as plain values: how Redis keeps a made key (JSON), and what every source of
    keys (the config, the admin API, Redis) is turned into a `Principal` from."""

    id: str
    alias: str
    tenant: str
    models: list[str] | None = None
    tiers: list[str] | None = None
    rpm: int | None = None
    tpm: int | None = None
    budget: dict[str, float] = msgspec.field(default_factory=dict)
    metadata: dict[str, str] = msgspec.field(default_factory=dict)
    expires_at: float | None = None
    created_at: float | None = None

    def principal(self, source: Literal["config", "api"]) -> Principal:
        return Principal(
            id=self.id,
            alias=self.alias,
            tenant=self.tenant,
            source=source,
            models=None if self.models is None else frozenset(self.models),
            tiers=None if self.tiers is None else tuple(self.tiers),
            rpm=self.rpm,
            tpm=self.tpm,
            budget=self.budget,
            metadata=self.metadata,
            expires_at=self.expires_at,
            created_at=self.created_at,
        )


def from_settings(key: KeySettings) -> Principal:
    return _Record(
        id=f"cfg:{key.alias}",
        alias=key.alias,
        tenant=key.tenant or key.alias,
        models=key.models,
        tiers=key.tiers,
        rpm=key.rpm,
        tpm=key.tpm,
        budget={str(k): v for k, v in key.budget.items()},
        metadata=dict(key.metadata),
        expires_at=None if key.expires_at is None else key.expires_at.timestamp(),
    ).principal("config")


class KeyRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The body of `POST /admin/keys`."""

    alias: Name
    tenant: Name | None = None
    models: list[Name] | None = None
    tiers: list[Name] | None = None
    rpm: PositiveInt | None = None
    tpm: PositiveInt | None = None
    budget: dict[Period, NonNegative] = msgspec.field(default_factory=dict)
    metadata: dict[Annotated[str, msgspec.Meta(max_length=200)], Annotated[str, msgspec.Meta(max_length=2000)]] = msgspec.field(
        default_factory=dict
    )
    expires_at: datetime | None = None
    """A time with a zone; or use `expires_in_s`."""
    expires_in_s: Annotated[float, msgspec.Meta(gt=0)] | None = None

    def principal(self, key_id: str, now: float) -> Principal:
        expires = self.expires_at.timestamp() if self.expires_at is not None else None
        if self.expires_in_s is not None:
            expires = now + self.expires_in_s
        return _Record(
            id=key_id,
            alias=self.alias,
            tenant=self.tenant or self.alias,
            models=self.models,
            tiers=self.tiers,
            rpm=self.rpm,
            tpm=self.tpm,
            budget={str(k): v for k, v in self.budget.items()},
            metadata=dict(self.metadata),
            expires_at=expires,
            created_at=now,
        ).principal("api")


def _encode(p: Principal) -> bytes:
    return msgspec.json.encode(p.record())


def _decode(raw: bytes) -> Principal:
    return msgspec.json.decode(raw, type=_Record).principal("api")


class KeysUnavailable(Exception):
    """Redis, where API-made keys live, did not answer."""


class KeyExists(Exception):
    pass


class RedisKeys:
    """API-made keys in Redis, under `{prefix}key:`: `h:<sha256>` -> the record (JSON), `id:<id>` ->
    its hash, `alias:<alias>` -> its id, and the set `ids` (on Redis Cluster under `{prefix}{key}:`,
    one hash slot). Create and revoke are one Lua script each.

    The last record read for each key is remembered, so that with `on_store_error.keys: open` a
    key already seen keeps working through a Redis outage. A revocation is also written to the
    sorted set `revoked` (id -> when, kept a week), which every process reads every
    `auth.revocation_sync_s` (`sync`): a key revoked anywhere before an outage stays refused
    through it."""

    _CREATE = """
if redis.call('SET', KEYS[1], ARGV[2], 'NX') == false then return 0 end
redis.call('SET', KEYS[2], ARGV[5])
redis.call('SET', KEYS[3], ARGV[4])
redis.call('SADD', KEYS[4], ARGV[2])
local gone = tonumber(ARGV[6])
if gone > 0 then
  for _, key in ipairs({KEYS[2], KEYS[3], KEYS[1]}) do
    redis.call('PEXPIREAT', key, gone)
  end
end
return 1
"""
    _REVOKE = """
local p = ARGV[1]
local h = redis.call('GET', KEYS[1])
if not h then return nil end
local raw = redis.call('GET', p .. 'h:' .. h)
redis.call('DEL', p .. 'h:' .. h, KEYS[1])
redis.call('SREM', KEYS[2], ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[3], now, ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - tonumber(ARGV[3]))
if raw then
  local alias = cjson.decode(raw)['alias']
  if redis.call('GET', p .. 'alias:' .. alias) == ARGV[2] then redis.call('DEL', p .. 'alias:' .. alias) end
end
return raw or ''
"""

    def __init__(self, client: Any, prefix: str) -> None:
        self._client = client
        self._p = f"{prefix}{tag(client, 'key')}:"
        self._create = client.register_script(self._CREATE)
        self._revoke = client.register_script(self._REVOKE)
        self._seen: dict[str, Principal] = {}
        self.revoked: set[str] = set()
        """Ids of keys revoked anywhere (read from `revoked` in Redis, kept through an outage)."""
        self._revoked_since = 0.0
        self._revoked_digests: set[str] = set()

    async def find(self, digest: str, *, fail_open: bool) -> Principal | None:
        try:
            raw = await self._client.get(f"{self._p}h:{digest}")
        except (RedisError, OSError) as exc:
            if digest in self._revoked_digests:
                return None  # known to be revoked: refused as any unknown key, outage or not
            seen = self._seen.get(digest)
            if fail_open and seen is not None and seen.id not in self.revoked:
                return seen
            raise KeysUnavailable(type(exc).__name__) from exc
        if raw is None:
            self._seen.pop(digest, None)
            return None
        found = self._seen[digest] = _decode(raw)
        return found

    async def create(self, request: KeyRequest, now: float) -> tuple[str, Principal]:
        key = new_key()
        principal = request.principal("key_" + secrets.token_hex(8), now)
        digest = hash_key(key).removeprefix("sha256:")
        # An expiring key's records go a week after it expires (until then it is refused as expired).
        gone = 0 if principal.expires_at is None else int((principal.expires_at + EXPIRED_KEPT_S) * 1000)
        p = self._p
        with _unavailable():
            keys = [f"{p}alias:{principal.alias}", f"{p}h:{digest}", f"{p}id:{principal.id}", f"{p}ids"]
            made = await self._create(keys=keys, args=[p, principal.id, principal.alias, digest, _encode(principal), gone])
        if not made:
            raise KeyExists(principal.alias)
        return key, principal

    async def revoke(self, key_id: str) -> Principal | None:
        p = self._p
        with _unavailable():
            keys = [f"{p}id:{key_id}", f"{p}ids", f"{p}revoked"]
            raw = await self._revoke(keys=keys, args=[p, key_id, EXPIRED_KEPT_S * 1000])
        self._forget({key_id})
        return _decode(raw) if raw else None

    async def sync(self) -> None:
        """Read the revocations made anywhere since the last read (raises RedisError when Redis is away)."""
        # From the last one read, inclusive: another revocation may share its millisecond.
        fresh = await self._client.zrangebyscore(f"{self._p}revoked", self._revoked_since, "+inf", withscores=True)
        if fresh:
            self._forget({key_id.decode() for key_id, _ in fresh})
            self._revoked_since = max(score for _, score in fresh)

    def _forget(self, ids: set[str]) -> None:
        self.revoked |= ids
        self._revoked_digests |= {h for h, p in self._seen.items() if p.id in ids}
        self._seen = {h: p for h, p in self._seen.items() if p.id not in ids}

    async def all(self) -> list[Principal]:
        with _unavailable():
            ids = sorted(i.decode() for i in await self._client.smembers(f"{self._p}ids"))
            if not ids:
                return []
            digests = await self._client.mget([f"{self._p}id:{i}" for i in ids])
            gone = [i for i, d in zip(ids, digests, strict=True) if d is None]
            if gone:  # records that expired away
                await self._client.srem(f"{self._p}ids", *gone)
            found = [d.decode() for d in digests if d is not None]
            raws = await self._client.mget([f"{self._p}h:{d}" for d in found]) if found else []
        return [_decode(r) for r in raws if r is not None]


@contextlib.contextmanager
def _unavailable() -> Iterator[None]:
    try:
        yield
    except (RedisError, OSError) as exc:
        raise KeysUnavailable(type(exc).__name__) from exc


class KeyTable:
    """The config's keys, by hash (rebuilt with each config)."""

    def __init__(self, settings: AuthSettings) -> None:
        self.by_hash = {k.key_hash.removeprefix("sha256:"): from_settings(k) for k in settings.keys}
        self.by_id = {p.id: p for p in self.by_hash.values()}


MISSING_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header using "
    "Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
)


def bearer(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The key in `Authorization: Bearer ...` (None when absent)."""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, key = value.decode("latin-1").strip().partition(" ")
            if scheme.lower() != "bearer" or not key.strip():
                raise Unauthorized("The Authorization header must be `Bearer YOUR_KEY`.")
            return key.strip()
    return None


async def authenticate(
    headers: Iterable[tuple[bytes, bytes]],
    table: KeyTable,
    stored: RedisKeys | None,
    fail_open: bool,
    clock: Any = time.time,
) -> Principal:
    """The caller's key, or the 401 / 503 that refuses it. Never echoes any part of the key."""
    key = bearer(headers)
    if key is None:
        raise Unauthorized(MISSING_KEY)
    digest = hashlib.sha256(key.encode()).hexdigest()
    principal = table.by_hash.get(digest)
    if principal is None and stored is not None:
        try:
            principal = await stored.find(digest, fail_open=fail_open)
        except KeysUnavailable as exc:
            raise ServiceUnavailable(
                "The key store did not answer, so this key could not be checked; try again.", code="auth_unavailable"
            ) from exc
    if principal is None:
        raise Unauthorized("Incorrect API key provided. Check it, or ask the gateway's operator for one.")
    if principal.expires_at is not None and clock() >= principal.expires_at:
        raise Unauthorized("This API key has expired.", code="expired_api_key")
    return principal
