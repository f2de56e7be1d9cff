"""Loading the YAML config: every problem reported with its key path and line, or typed settings.

Steps: parse YAML (keeping each key's line), interpolate `${VAR}` / `${VAR:-default}` in string
values, check the data against the settings types collecting every problem (not only the first),
convert, then cross-field checks (which run once the types are right). Scalars convert
non-strictly, so `${PRICE:-0}` gives a number where a number is expected. `version` is a short
hash of the file's bytes, so every worker that loads the same file reports the same
`x-gateway-config-version`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import json
import os
import re
import ssl
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import yaml

from gateway.redis_client import BadURL
from gateway.redis_client import target as redis_target
from gateway.routing.classifier import DEFAULT_MODEL, ComplexityModel
from gateway.settings import START_ONLY, LocalEngineSettings, RouterSettings, Secret, Settings

DEFAULT_CONFIG = Path("config") / "gateway.yaml"
"""The embedded default, looked for in the working directory, then in the checkout the gateway
runs from, when neither `--config` nor `$GATEWAY_CONFIG` names a file."""
PathKey = tuple[str | int, ...]
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a config file."""

    path: PathKey
    message: str
    line: int | None = None

    def render(self, source: str) -> str:
        where = f"{source}:{self.line}" if self.line else source
        key = _dotted(self.path)
        return f"{where}: {key}: {self.message}" if key else f"{where}: {self.message}"


class ConfigError(Exception):
    """The config file cannot be used; `problems` says every reason."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("\n".join(p.render(source) for p in problems))


@dataclass(frozen=True)
class LoadedConfig:
    settings: Settings
    version: str
    source: str
    classifiers: dict[str, ComplexityModel] = dataclasses.field(default_factory=dict)
    """Each router's classifier, loaded with the file."""


def default_path(env: Mapping[str, str] | None = None) -> str:
    """`$GATEWAY_CONFIG`, else the first embedded default found (see `DEFAULT_CONFIG`); a
    `ConfigError` naming the places looked in when there is none."""
    env = os.environ if env is None else env
    if env.get("GATEWAY_CONFIG"):
        return env["GATEWAY_CONFIG"]
    places = [Path.cwd() / DEFAULT_CONFIG, Path(__file__).resolve().parents[1] / DEFAULT_CONFIG]
    for place in places:
        if place.is_file():
            return str(place)
    tried = " or ".join(str(p) for p in places)
    problem = Problem((), f"no config file: give --config FILE or $GATEWAY_CONFIG (there is none at {tried})")
    raise ConfigError("gateway", [problem])


def load(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> LoadedConfig:
    """Read and validate a config file; raises `ConfigError` listing every problem."""
    source = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(source, [Problem((), f"cannot read the file: {exc.strerror or exc}")]) from None
    return parse(raw, source, os.environ if env is None else env)


def start_only_checksum(raw: bytes) -> str:
    """A hash of the start-only settings (`gateway.settings.START_ONLY`) as the file writes them:
    `${VAR}` references are hashed as written, so no secret enters it and it does not depend on the
    environment. Settings the file leaves out count as their defaults. A replica has to restart to
    take a change here (everything else reloads in place), so a Deployment carries this hash as a
    pod annotation: when it changes, the replicas roll."""
    data = yaml.safe_load(raw) or {}
    chosen = {}
    for path in START_ONLY:
        value: Any = data
        for part in path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        chosen[path] = value
    return hashlib.sha256(json.dumps(chosen, sort_keys=True, default=str).encode()).hexdigest()[:16]


def parse(raw: bytes, source: str, env: Mapping[str, str]) -> LoadedConfig:
    data, lines = _read_yaml(raw, source)
    problems: list[Problem] = []
    data = _interpolate(data, (), env, problems)
    if not isinstance(data, dict):
        problems.append(Problem((), "the file must be a mapping of settings (server, pools, ...)", 1))
    else:
        problems += _type_problems(data, Settings, ())
    if not problems:
        settings = msgspec.convert(data, Settings, strict=False, dec_hook=_dec_hook)
        problems += check(settings)
    classifiers: dict[str, ComplexityModel] = {}
    if not problems:
        problems += _ca_bundle_problems(settings, source)
        for name, router in settings.routers.items():
            if (model := _classifier(name, router, source, problems)) is not None:
                classifiers[name] = model
    if problems:
        raise ConfigError(source, [_with_line(p, lines) for p in problems])
    return LoadedConfig(settings, hashlib.sha256(raw).hexdigest()[:12], source, classifiers)


def classifier_path(router: RouterSettings, source: str) -> Path:
    """The router's model file: relative paths start at the config file's folder."""
    if router.model is None:
        return DEFAULT_MODEL
    path = Path(router.model)
    return path if path.is_absolute() else Path(source).resolve().parent / path


def _classifier(name: str, router: RouterSettings, source: str, problems: list[Problem]) -> ComplexityModel | None:
    path = classifier_path(router, source)
    at: PathKey = ("routers", name, "model")
    try:
        model = ComplexityModel.load(path)
    except (OSError, ValueError, KeyError) as exc:
        problems.append(Problem(at, f"cannot load the classifier {str(path)!r}: {exc}"))
        return None
    if list(router.tiers) != list(model.tiers):
        problems.append(
            Problem(("routers", name, "tiers"), f"must be the classifier's tiers, smallest first: {list(model.tiers)}")
        )
    return model


def _ca_bundle_problems(settings: Settings, source: str) -> list[Problem]:
    """Each `ca_bundle` (relative to the config file) is a PEM file of certificates."""
    problems = []
    for name, pool in settings.pools.items():
        for j, dep in enumerate(pool.deployments):
            if dep.ca_bundle is None:
                continue
            path = Path(source).resolve().parent / dep.ca_bundle
            try:
                ssl.create_default_context(cafile=str(path))
            except (OSError, ssl.SSLError) as exc:
                problems.append(Problem(("pools", name, "deployments", j, "ca_bundle"), f"cannot read {str(path)!r}: {exc}"))
    return problems


def check(settings: Settings) -> list[Problem]:
    """Rules that span fields: unique names, and what each backend kind needs."""
    problems: list[Problem] = []
    seen: dict[str, PathKey] = {}
    for name in settings.pools:
        seen[name] = ("pools", name)
    deployment_ids: set[str] = set()
    engine_ports: dict[int, str] = {}
    for name, pool in settings.pools.items():
        for i, alias in enumerate(pool.aliases):
            path: PathKey = ("pools", name, "aliases", i)
            if alias in seen:
                problems.append(Problem(path, f"model name {alias!r} is already used at {_dotted(seen[alias])}"))
            seen.setdefault(alias, path)
        for j, dep in enumerate(pool.deployments):
            at: PathKey = ("pools", name, "deployments", j)
            if dep.id in deployment_ids:
                problems.append(Problem((*at, "id"), f"deployment id {dep.id!r} is used twice"))
            deployment_ids.add(dep.id)
            if dep.backend == "openai" and not dep.base_url:
                problems.append(Problem(at, "an `openai` deployment needs base_url"))
            if dep.backend != "local" and dep.engine is not None:
                problems.append(Problem((*at, "engine"), "only a `local` deployment has an engine"))
            if dep.backend == "local" and dep.base_url:
                problems.append(Problem((*at, "base_url"), "a `local` deployment runs its own engine; set engine.port instead"))
            if dep.backend == "local":
                port = (dep.engine or LocalEngineSettings()).port
                if port in engine_ports:
                    problems.append(
                        Problem((*at, "engine", "port"), f"port {port} is already the engine port of {engine_ports[port]!r}")
                    )
                engine_ports.setdefault(port, dep.id)
            if dep.base_url and not dep.base_url.startswith(("http://", "https://")):
                problems.append(Problem((*at, "base_url"), "must start with http:// or https://"))
            if dep.proxy is not None and dep.proxy.lower() != "none" and not dep.proxy.startswith(("http://", "https://")):
                problems.append(Problem((*at, "proxy"), "must be an http:// or https:// URL, or none"))
        problems += _chain_problems(settings, name)
    resilience = settings.resilience
    if resilience.deadline_s > resilience.max_deadline_s:
        problems.append(Problem(("resilience", "deadline_s"), "must not be longer than resilience.max_deadline_s"))
    problems += _router_problems(settings, seen)
    url = settings.redis.address()
    if url is not None:
        try:
            redis_target(url)
        except BadURL as exc:
            problems.append(Problem(("redis", "url"), str(exc)))
    if settings.cache.enabled and settings.cache.store == "redis" and url is None:
        problems.append(Problem(("cache", "store"), "`redis` needs redis.url"))
    problems += _auth_problems(settings, seen)
    problems += _admin_problems(settings)
    for i, proxy in enumerate(settings.server.forwarded_allow_ips):
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            problems.append(Problem(("server", "forwarded_allow_ips", i), f"{proxy!r} is not an IP address or network"))
    return problems


def _admin_problems(settings: Settings) -> list[Problem]:
    admin = settings.admin
    if admin.key() is not None:
        return []
    if admin.on_traffic_port:
        return [
            Problem(("admin", "on_traffic_port"), "needs admin.api_key: every client of the traffic port could reach /admin/*")
        ]
    if admin.enabled and not is_loopback(admin.host):
        return [Problem(("admin", "host"), f"{admin.host!r} is beyond loopback: set admin.api_key (or listen on 127.0.0.1)")]
    return []


def is_loopback(host: str) -> bool:
    """Whether an address (or `localhost`) is loopback; a name that needs resolving is not."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _auth_problems(settings: Settings, models: dict[str, PathKey]) -> list[Problem]:
    """Keys are unique and name models and tiers that exist; auth on needs a way to have a key."""
    auth = settings.auth
    problems: list[Problem] = []
    url = settings.redis.address()
    if auth.store == "redis" and url is None:
        problems.append(Problem(("auth", "store"), "`redis` needs redis.url"))
    if auth.enabled and not auth.keys and url is None:
        problems.append(
            Problem(
                ("auth",),
                "auth is on (the default) but no key can exist: add auth.keys, set redis.url to make keys "
                "through /admin/keys, or write `enabled: false` to run without keys",
            )
        )
    tiers: set[str] = {pool.tier for pool in settings.pools.values() if pool.tier}
    tiers |= {t for router in settings.routers.values() for t in router.tiers}
    aliases: set[str] = set()
    hashes: set[str] = set()
    for i, key in enumerate(auth.keys):
        at: PathKey = ("auth", "keys", i)
        if key.alias in aliases:
            problems.append(Problem((*at, "alias"), f"key alias {key.alias!r} is used twice"))
        if key.key_hash in hashes:
            problems.append(Problem((*at, "key_hash"), "the same key is written twice"))
        aliases.add(key.alias)
        hashes.add(key.key_hash)
        for j, model in enumerate(key.models or []):
            if model not in models:
                problems.append(Problem((*at, "models", j), f"no model named {model!r}"))
        for j, tier in enumerate(key.tiers or []):
            if tier not in tiers:
                problems.append(Problem((*at, "tiers", j), f"no pool or router has a tier {tier!r}"))
        if key.expires_at is not None and key.expires_at.tzinfo is None:
            problems.append(Problem((*at, "expires_at"), "needs a time zone, e.g. 2027-01-01T00:00:00Z"))
    return problems


def _router_problems(settings: Settings, seen: dict[str, PathKey]) -> list[Problem]:
    """Router names are model names too; their pools exist; thresholds rise with the tiers."""
    problems: list[Problem] = []
    for name, router in settings.routers.items():
        at: PathKey = ("routers", name)
        if name in seen:
            problems.append(Problem(at, f"model name {name!r} is already used at {_dotted(seen[name])}"))
        seen.setdefault(name, at)
        last = -1.0
        for tier, spec in router.tiers.items():
            if spec.pool not in settings.pools:
                problems.append(Problem((*at, "tiers", tier, "pool"), f"no pool named {spec.pool!r}"))
            if spec.threshold is not None:
                if spec.threshold < last:
                    problems.append(
                        Problem((*at, "tiers", tier, "threshold"), "must not be below the threshold of a smaller tier")
                    )
                last = spec.threshold
        if router.shadow is not None and router.shadow not in settings.pools:
            problems.append(Problem((*at, "shadow"), f"no pool named {router.shadow!r}"))
    return problems


def _chain_problems(settings: Settings, name: str) -> list[Problem]:
    """Fallback chains name other pools (by pool name, not alias)."""
    problems: list[Problem] = []
    pool = settings.pools[name]
    for key in ("fallbacks", "context_fallbacks"):
        for i, target in enumerate(getattr(pool, key)):
            path: PathKey = ("pools", name, key, i)
            if target == name:
                problems.append(Problem(path, "a pool cannot fall back to itself"))
            elif target not in settings.pools:
                problems.append(Problem(path, f"no pool is named {target!r} (pools: {', '.join(settings.pools)})"))
    return problems


# --- YAML with line numbers -------------------------------------------------------------------


def _read_yaml(raw: bytes, source: str) -> tuple[Any, dict[PathKey, int]]:
    try:
        node = yaml.compose(raw.decode("utf-8"), Loader=yaml.SafeLoader)
    except UnicodeDecodeError:
        raise ConfigError(source, [Problem((), "the file is not valid UTF-8")]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise ConfigError(source, [Problem((), f"invalid YAML: {getattr(exc, 'problem', None) or exc}", line)]) from None
    if node is None:
        raise ConfigError(source, [Problem((), "the file is empty")])
    lines: dict[PathKey, int] = {}
    problems: list[Problem] = []
    data = _construct(node, (), lines, problems)
    if problems:
        raise ConfigError(source, problems)
    return data, lines


def _construct(node: yaml.Node, path: PathKey, lines: dict[PathKey, int], problems: list[Problem]) -> Any:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _scalar(key_node, path, problems) if isinstance(key_node, yaml.ScalarNode) else None
            if not isinstance(key, str):
                problems.append(Problem(path, "keys must be strings", key_node.start_mark.line + 1))
                continue
            if key in out:
                problems.append(Problem((*path, key), "this key appears twice", key_node.start_mark.line + 1))
            out[key] = _construct(value_node, (*path, key), lines, problems)
            lines[(*path, key)] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_construct(item, (*path, i), lines, problems) for i, item in enumerate(node.value)]
    return _scalar(node, path, problems)


def _scalar(node: yaml.Node, path: PathKey, problems: list[Problem]) -> Any:
    """The node's value; a value YAML cannot build (an unknown tag, a date that does not exist) is a problem."""
    try:
        return yaml.SafeLoader("").construct_object(node)
    except (yaml.YAMLError, ValueError, OverflowError) as exc:
        problem = getattr(exc, "problem", None) or str(exc)
        problems.append(Problem(path, f"invalid value {node.value!r:.60}: {problem}", node.start_mark.line + 1))
        return None


def _with_line(problem: Problem, lines: dict[PathKey, int]) -> Problem:
    if problem.line is not None:
        return problem
    path = problem.path
    while path and path not in lines:
        path = path[:-1]
    return Problem(problem.path, problem.message, lines.get(path))


# --- ${ENV} interpolation ----------------------------------------------------------------------


def _interpolate(value: Any, path: PathKey, env: Mapping[str, str], problems: list[Problem]) -> Any:
    if isinstance(value, dict):
        return {k: _interpolate(v, (*path, k), env, problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, (*path, i), env, problems) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env and env[name] != "":
            return env[name]
        if default is not None:
            return default
        problems.append(Problem(path, f"environment variable {name} is not set (write ${{{name}:-default}} for a default)"))
        return ""

    return _ENV.sub(substitute, value)


# --- type checking that reports every problem ----------------------------------------------------


def _type_problems(value: Any, tp: Any, path: PathKey) -> list[Problem]:
    """Check `value` against `tp`, descending into structs, dicts and lists so that every problem
    is found with its path; leaves are checked by msgspec itself."""
    origin = typing.get_origin(tp)
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return _struct_problems(value, tp, path)
    if origin is dict and isinstance(value, dict):
        key_tp, value_tp = typing.get_args(tp)
        problems = [p for k in value for p in _leaf_problems(k, key_tp, (*path, k), "key ")]
        return problems + [p for k, v in value.items() for p in _type_problems(v, value_tp, (*path, k))]
    if origin is list and isinstance(value, list):
        (item_tp,) = typing.get_args(tp)
        return [p for i, v in enumerate(value) for p in _type_problems(v, item_tp, (*path, i))]
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None and len(args) < len(typing.get_args(tp)):
            return []
        if len(args) == 1:
            return _type_problems(value, args[0], path)
    if origin is typing.Annotated:
        inner = typing.get_args(tp)[0]
        if typing.get_origin(inner) in (dict, list) and isinstance(value, (dict, list)):
            return _type_problems(value, inner, path) or _leaf_problems(value, tp, path)
    return _leaf_problems(value, tp, path)


def _struct_problems(value: Any, tp: type[msgspec.Struct], path: PathKey) -> list[Problem]:
    if not isinstance(value, dict):
        return [Problem(path, f"expected a mapping, got {_kind(value)}")]
    fields = {f.encode_name: f for f in msgspec.structs.fields(tp)}
    problems = [Problem((*path, k), f"unknown key (expected one of: {', '.join(fields)})") for k in value if k not in fields]
    for name, field in fields.items():
        if name in value:
            problems += _type_problems(value[name], field.type, (*path, name))
        elif field.required:
            problems.append(Problem(path, f"missing required key {name!r}"))
    return problems


def _leaf_problems(value: Any, tp: Any, path: PathKey, what: str = "") -> list[Problem]:
    try:
        msgspec.convert(value, tp, strict=False, dec_hook=_dec_hook)
    except msgspec.ValidationError as exc:
        message = str(exc).split(" - at `")[0]
        if message.startswith("Invalid enum value") and (choices := _choices(tp)):
            message += f" (expected one of: {', '.join(map(str, choices))})"
        return [Problem(path, what + message)]
    return []


def _choices(tp: Any) -> list[object]:
    """The values a `Literal` type allows, looking through `Optional` and `Annotated`."""
    if typing.get_origin(tp) is typing.Literal:
        return list(typing.get_args(tp))
    return [c for arg in typing.get_args(tp) for c in _choices(arg)]


def _dec_hook(tp: type, value: Any) -> Any:
    if tp is Secret:
        if isinstance(value, str):
            return Secret(value)
        raise ValueError(f"Expected `str`, got `{_kind(value)}`")
    raise NotImplementedError(f"no decoder for {tp}")


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", type(None): "nothing"}.get(type(value), type(value).__name__)


def _dotted(path: PathKey) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
