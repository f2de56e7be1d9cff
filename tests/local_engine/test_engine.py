"""Engine behaviour that users rely on: the prefix cache, preemption, chunked prefill, n > 1, stops,
admission, and that cancelled and finished requests give every block back."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from backends.local_engine.errors import InvalidRequest
from backends.local_engine.sampling import SamplingParams
from tests.local_engine.conftest import engine

GREEDY = SamplingParams(temperature=0, max_tokens=16, ignore_eos=True, logprobs=5)


def run(eng, prompts: list[list[int]], params: SamplingParams = GREEDY) -> dict[tuple[str, int], list[int]]:
    """Every choice's tokens, by (request id, choice index)."""
    for i, prompt in enumerate(prompts):
        eng.add_request(f"r{i}", prompt, params)
    out: dict[tuple[str, int], list[int]] = {}
    while eng.has_unfinished():
        for d in eng.step():
            out.setdefault((d.request_id, d.index), []).extend(d.token_ids)
    return out


def words(n: int, offset: int = 1000) -> list[int]:
    return [offset + (i * 7919) % 20000 for i in range(n)]


def test_prefix_cache_hit_equals_miss_and_is_counted(llama_dir: Path) -> None:
    shared = words(40)
    prompts = [[*shared, 5000, 5001], [*shared, 6000]]
    cold = run(engine(llama_dir, enable_prefix_caching=False), prompts)
    eng = engine(llama_dir)
    first = run(eng, prompts[:1])
    eng.add_request("again", prompts[1], GREEDY)
    tokens = []
    while eng.has_unfinished():
        for d in eng.step():
            tokens += d.token_ids
            cached = d.num_cached_tokens
    assert first[("r0", 0)] == cold[("r0", 0)]
    assert tokens == cold[("r1", 0)]
    assert cached == 32  # two full 16-token blocks of the shared 40 tokens
    assert eng.stats()["prefix_hit_rate"] > 0


def test_whole_prompt_hit_still_computes_the_last_token(llama_dir: Path) -> None:
    prompt = words(48)  # exactly three blocks
    cold = run(engine(llama_dir, enable_prefix_caching=False), [prompt])[("r0", 0)]
    eng = engine(llama_dir)
    run(eng, [prompt])
    eng.add_request("again", prompt, GREEDY)
    out, cached = [], None
    while eng.has_unfinished():
        for d in eng.step():
            out += d.token_ids
            cached = d.num_cached_tokens
    assert out == cold
    assert cached == 32  # the third block is recomputed: its last token's scores are needed


def test_chunked_prefill_equals_whole_prefill(llama_dir: Path) -> None:
    prompts = [words(100), words(37, 3000), words(5, 9000)]
    whole = run(engine(llama_dir, max_num_batched_tokens=512), prompts)
    chunked = run(engine(llama_dir, max_num_batched_tokens=24), prompts)
    assert chunked == whole


def test_preempted_and_resumed_equals_uninterrupted(llama_dir: Path) -> None:
    prompts = [words(30, 1000 + 100 * i) for i in range(6)]
    params = SamplingParams(temperature=0, max_tokens=40, ignore_eos=True)
    roomy = run(engine(llama_dir, num_kv_blocks=256), prompts, params)
    tight = engine(llama_dir, num_kv_blocks=14)  # 6 x 70 tokens need 30 blocks: some must wait or be preempted
    squeezed = run(tight, prompts, params)
    assert tight.stats()["preemptions"] > 0
    assert squeezed == roomy
    assert tight.blocks.num_free == tight.blocks.num_blocks


def test_seeded_sampling_is_reproducible_whatever_the_batch(llama_dir: Path) -> None:
    params = SamplingParams(n=3, temperature=1.0, top_p=0.9, seed=42, max_tokens=12, ignore_eos=True)
    alone = run(engine(llama_dir), [words(20)], params)
    crowded = run(engine(llama_dir), [words(20), words(33, 4000), words(8, 7000)], params)
    assert {k: v for k, v in crowded.items() if k[0] == "r0"} == alone
    assert len({tuple(v) for v in alone.values()}) == 3  # three different choices
    other_seed = run(engine(llama_dir), [words(20)], SamplingParams(**{**_fields(params), "seed": 7}))
    assert other_seed != alone


def test_n_choices_share_the_prompt_blocks(llama_dir: Path) -> None:
    eng = engine(llama_dir)
    params = SamplingParams(n=4, temperature=1.0, seed=1, max_tokens=4, ignore_eos=True)
    eng.add_request("r", words(64), params)
    cached = {}
    while eng.has_unfinished():
        for d in eng.step():
            cached[d.index] = d.num_cached_tokens
    assert cached[0] == 0
    assert all(cached[i] == 48 for i in (1, 2, 3))  # all full blocks but the one holding the last token


def streamed(eng, prompt: list[int], params: SamplingParams) -> list:
    eng.add_request("s", prompt, params)
    deltas = []
    while eng.has_unfinished():
        deltas += eng.step()
    return deltas


def test_stop_strings_cut_the_text_and_stop_tokens_end_it(llama_dir: Path) -> None:
    eng = engine(llama_dir)
    prompt = words(10)
    free = streamed(eng, prompt, SamplingParams(temperature=0, max_tokens=20, ignore_eos=True))
    text = "".join(d.text for d in free)
    stop = text[len(text) // 2 : len(text) // 2 + 3]
    deltas = streamed(eng, prompt, SamplingParams(temperature=0, max_tokens=20, ignore_eos=True, stop=(stop,)))
    assert deltas[-1].finish_reason == "stop"
    assert "".join(d.text for d in deltas) == text[: text.index(stop)]
    kept = streamed(eng, prompt, SamplingParams(temperature=0, max_tokens=20, stop=(stop,), include_stop_str_in_output=True))
    assert "".join(d.text for d in kept) == text[: text.index(stop) + len(stop)]
    tokens = [t for d in free for t in d.token_ids]
    out = eng.generate([prompt], SamplingParams(temperature=0, max_tokens=20, stop_token_ids=(tokens[5],)))[0]
    assert out == tokens[: tokens.index(tokens[5]) + 1]


def test_min_tokens_holds_back_the_stop_token(llama_dir: Path) -> None:
    eng = engine(llama_dir)
    prompt = words(10)
    free = eng.generate([prompt], SamplingParams(temperature=0, max_tokens=10, ignore_eos=True))[0]
    first = free[0]
    out = eng.generate([prompt], SamplingParams(temperature=0, max_tokens=10, min_tokens=3, stop_token_ids=(first,)))[0]
    assert first not in out[:3] and len(out) >= 4


def test_requests_that_can_never_fit_are_refused_clearly(llama_dir: Path) -> None:
    eng = engine(llama_dir, max_model_len=64, num_kv_blocks=3)
    with pytest.raises(InvalidRequest, match="maximum context length is 64") as exc:
        eng.add_request("long", words(60), SamplingParams(max_tokens=10))
    assert exc.value.code == "context_length_exceeded"
    with pytest.raises(InvalidRequest, match="more than the engine holds"):
        eng.add_request("big", words(40), SamplingParams(max_tokens=20))
    with pytest.raises(InvalidRequest, match="must be in"):
        eng.add_request("bad", [10**9], SamplingParams(max_tokens=2))
    assert not eng.has_unfinished()


@pytest.mark.slow
def test_thousand_random_requests_with_cancellations_free_every_block(llama_dir: Path) -> None:
    rng = random.Random(0)
    eng = engine(llama_dir, num_kv_blocks=40, max_num_batched_tokens=96, max_num_seqs=16)
    live: list[str] = []
    done = 0
    for i in range(1000):
        n = rng.choice([1, 1, 1, 2])
        params = SamplingParams(n=n, temperature=0 if n == 1 else 0.8, max_tokens=rng.randint(1, 12), ignore_eos=True)
        eng.add_request(f"q{i}", words(rng.randint(1, 60), rng.randint(1000, 9000)), params)
        live.append(f"q{i}")
        for _ in range(rng.randint(0, 2)):
            done += sum(1 for d in eng.step() if d.finish_reason)
        if rng.random() < 0.2 and live:
            eng.abort(live.pop(rng.randrange(len(live))))
    while eng.has_unfinished():
        eng.step()
    blocks = eng.blocks
    assert blocks.num_free == blocks.num_blocks
    assert all(b.ref_count == 0 for b in blocks.blocks)
    assert not eng.scheduler.running and not eng.scheduler.waiting
    assert done > 100


def _fields(params: SamplingParams) -> dict:
    return {name: getattr(params, name) for name in params.__dataclass_fields__}
