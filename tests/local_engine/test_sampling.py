"""The sampler's filters and penalties, and request validation."""

from __future__ import annotations

import math

import pytest
import torch

from backends.local_engine.errors import InvalidRequest
from backends.local_engine.sampling import SampleRow, SamplingParams, sample


def draws(logits: list[float], params: SamplingParams, n: int = 400, output: list[int] | None = None) -> set[int]:
    g = torch.Generator().manual_seed(0)
    row = torch.tensor([logits])
    return {sample(row, [SampleRow(params, g, [], output or [])]).tokens[0] for _ in range(n)}


LOGITS = [3.0, 2.9, 2.8, 0.0, -1.0, -5.0]


def test_top_k_top_p_and_min_p_limit_what_can_be_drawn() -> None:
    assert draws(LOGITS, SamplingParams(temperature=1.0)) >= {0, 1, 2, 3}
    assert draws(LOGITS, SamplingParams(temperature=1.0, top_k=2)) == {0, 1}
    assert draws(LOGITS, SamplingParams(temperature=1.0, top_p=0.5)) == {0, 1}
    assert draws(LOGITS, SamplingParams(temperature=1.0, min_p=0.5)) == {0, 1, 2}


def test_greedy_and_penalties() -> None:
    row = torch.tensor([LOGITS])
    assert sample(row, [SampleRow(SamplingParams(temperature=0), None, [], [])]).tokens == [0]
    # Token 0 already said three times: a frequency penalty moves the argmax to token 1.
    rows = [SampleRow(SamplingParams(temperature=0, frequency_penalty=0.1), None, [], [0, 0, 0])]
    assert sample(row, rows).tokens == [1]
    rows = [SampleRow(SamplingParams(temperature=0, repetition_penalty=1.5), None, [0, 1], [])]
    assert sample(row, rows).tokens == [2]
    rows = [SampleRow(SamplingParams(temperature=0), None, [], [], banned=(0, 1))]
    assert sample(row, rows).tokens == [2]


def test_logprobs_are_the_models_and_top_k_are_sorted() -> None:
    row = torch.tensor([LOGITS])
    out = sample(row, [SampleRow(SamplingParams(temperature=0, logprobs=3), None, [], [])])
    expected = torch.log_softmax(row, -1)[0]
    assert out.logprobs is not None and math.isclose(out.logprobs[0], float(expected[0]), rel_tol=1e-6)
    assert out.top is not None and [t for t, _ in out.top[0]] == [0, 1, 2]


@pytest.mark.parametrize(
    "bad",
    [{"temperature": -1}, {"temperature": float("nan")}, {"top_p": 0}, {"max_tokens": 0}, {"n": 0},
     {"presence_penalty": 3}, {"logprobs": 21}, {"stop": ("",)}, {"n": 2, "temperature": 0}],
)  # fmt: skip
def test_bad_values_are_refused_with_the_parameter_named(bad: dict) -> None:
    with pytest.raises(InvalidRequest) as exc:
        SamplingParams(**bad)
    assert exc.value.param == next(iter(bad)).replace("logprobs", "top_logprobs")
