"""Hypothesis against the config loader: whatever the file holds (bytes, YAML of any shape, a
good config with parts broken), loading ends in a config or in a `ConfigError` whose every
problem names the file, never in another exception."""

from __future__ import annotations

import copy
import os
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway import config

pytestmark = pytest.mark.slow  # thousands of generated configs

FUZZ = settings(
    max_examples=int(os.environ.get("GATEWAY_FUZZ_EXAMPLES", "300")),
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)

GOOD: dict[str, Any] = {
    "server": {"max_body_bytes": 1024, "max_messages": 10},
    "auth": {
        "keys": [
            {
                "alias": "a",
                "key_hash": "sha256:" + "0" * 64,
                "rpm": 5,
                "budget": {"day": 1.0},
                "expires_at": "2030-01-01T00:00:00Z",
            }
        ]
    },
    "cache": {"enabled": False, "threshold": 0.9},
    "resilience": {"deadline_s": 30},
    "pools": {
        "small": {
            "tier": "small",
            "aliases": ["mini"],
            "fallbacks": ["large"],
            "deployments": [{"id": "s1", "backend": "echo", "price": {"input_per_1m": 1, "output_per_1m": 2}}],
        },
        "large": {"tier": "large", "deployments": [{"id": "l1", "base_url": "http://127.0.0.1:9/v1", "api_key": "${KEY:-x}"}]},
    },
}

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["${UNSET}", "${KEY:-d}", "${", "sha256:", "http://x", "redis://x", "small", "echo", "-1", "1e999"]),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12) | st.sampled_from(list(GOOD)), inner, max_size=4)
    ),
    max_leaves=20,
)


def load(raw: bytes) -> None:
    try:
        config.parse(raw, "fuzz.yaml", {"KEY": "k"})
    except config.ConfigError as exc:
        assert exc.problems
        for problem in exc.problems:
            rendered = problem.render("fuzz.yaml")
            assert rendered.startswith("fuzz.yaml") and len(rendered) > len("fuzz.yaml: ")


def test_the_good_config_loads() -> None:
    loaded = config.parse(yaml.safe_dump(GOOD).encode(), "fuzz.yaml", {})
    assert loaded.settings.auth.keys[0].rpm == 5


@FUZZ
@given(st.binary(max_size=300))
def test_any_bytes(raw: bytes) -> None:
    load(raw)


@FUZZ
@given(st.dictionaries(st.sampled_from([*GOOD, "routers", "redis", "telemetry", "admin", "reload"]), values, max_size=5))
def test_any_yaml_shape_under_the_known_keys(data: dict[str, Any]) -> None:
    load(yaml.safe_dump(data, allow_unicode=True).encode())


def _paths(node: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [at]
    if isinstance(node, dict):
        for k, v in node.items():
            found += _paths(v, (*at, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            found += _paths(v, (*at, i))
    return found


PATHS = [p for p in _paths(GOOD) if p]


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(PATHS), st.one_of(st.just("<delete>"), values)), min_size=1, max_size=3))
def test_a_good_config_with_parts_replaced_or_removed(edits: list[tuple[tuple[Any, ...], Any]]) -> None:
    data = copy.deepcopy(GOOD)
    for path, value in edits:
        parent: Any = data
        try:
            for step in path[:-1]:
                parent = parent[step]
            if value == "<delete>":
                del parent[path[-1]]
            else:
                parent[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue  # an earlier edit removed or replaced this path
    load(yaml.safe_dump(data, allow_unicode=True).encode())
