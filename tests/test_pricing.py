"""Prices: per-1M input, output and cached input tokens; GPU-hour pricing over measured seconds per token."""

from __future__ import annotations

import msgspec
import pytest

from backends.types import Usage
from gateway.routing.breaker import Breaker
from gateway.routing.pools import Deployment
from gateway.settings import BreakerSettings, DeploymentSettings, Price


def usage(body: str) -> Usage:
    return msgspec.json.decode(body, type=Usage)


def test_cached_prompt_tokens_are_priced_apart() -> None:
    price = Price(input_per_1m=2.0, output_per_1m=8.0, cached_input_per_1m=0.5)
    u = usage('{"prompt_tokens": 1000, "completion_tokens": 100, "prompt_tokens_details": {"cached_tokens": 600}}')
    assert price.cost(u.prompt_tokens, u.completion_tokens, u.cached_tokens) == pytest.approx(
        (400 * 2 + 600 * 0.5 + 100 * 8) / 1e6
    )
    assert Price(input_per_1m=2.0).cost(1000, 0, 600) == pytest.approx(1000 * 2 / 1e6)  # no cached price: the input price
    assert usage('{"prompt_tokens": 10, "prompt_tokens_details": {"cached_tokens": 50}}').cached_tokens == 10
    assert usage('{"prompt_tokens": 10, "prompt_tokens_details": null}').cached_tokens == 0


class _Engine:
    """Stands in for LocalBackend's measured rate (pure pricing logic)."""

    seconds_per_token: float | None = None


def test_gpu_hour_price_uses_the_measured_seconds_per_token() -> None:
    settings = DeploymentSettings(id="local", backend="local", price=Price(input_per_1m=1.0, gpu_hour_usd=3.6))
    engine = _Engine()
    deployment = Deployment(settings, engine, Breaker(BreakerSettings()))  # type: ignore[arg-type]
    u = Usage(prompt_tokens=300, completion_tokens=100)
    assert deployment.cost(u) == pytest.approx(300 / 1e6)  # not measured yet: the per-1M price
    engine.seconds_per_token = 0.002
    assert deployment.cost(u) == pytest.approx(3.6 / 3600 * 0.002 * 400)
