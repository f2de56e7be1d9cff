"""The engine's greedy tokens against transformers' on tiny random models, on CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from backends.local_engine import attention
from backends.local_engine.errors import LoadError
from backends.local_engine.sampling import SamplingParams
from tests.local_engine.conftest import assert_same_or_tied, engine, hf_checkpoint, hf_greedy, hf_model

GREEDY = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True)


def prompts(tokenizer) -> list[list[int]]:
    return [
        tokenizer.encode("hello"),
        tokenizer.encode("the quick brown fox jumps over the lazy dog and keeps running into the woods"),
        tokenizer.encode("write a function that adds two numbers " * 4),
    ]


def check_greedy(folder: Path, **settings) -> None:
    eng = engine(folder, **settings)
    ref_model = hf_model(folder)
    for prompt in prompts(eng.tokenizer):
        ours = eng.generate([prompt], GREEDY)[0]
        ref, _ = hf_greedy(ref_model, prompt, GREEDY.max_tokens)
        assert ours == ref


def test_llama_greedy_tokens_equal_transformers(llama_dir: Path) -> None:
    check_greedy(llama_dir)


def test_qwen2_with_bias_and_tied_embeddings_equals_transformers(tmp_path: Path, llama_dir: Path) -> None:
    check_greedy(hf_checkpoint(tmp_path, llama_dir, "qwen2", tie_word_embeddings=True))


def test_llama_with_attention_bias_from_transformers_save_pretrained(tmp_path: Path, llama_dir: Path) -> None:
    check_greedy(hf_checkpoint(tmp_path, llama_dir, "llama", attention_bias=True, num_key_value_heads=1))


def test_mistral_sliding_window_equals_transformers(tmp_path: Path, llama_dir: Path) -> None:
    # A window shorter than the prompts, so that the mask matters in prefill and in decode.
    check_greedy(hf_checkpoint(tmp_path, llama_dir, "mistral", sliding_window=8))


@pytest.mark.parametrize(
    "scaling",
    [
        {"rope_type": "linear", "factor": 2.0},
        {
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 32,
        },
        {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32},
    ],
    ids=lambda s: s["rope_type"],
)
def test_rope_scaling_variants_equal_transformers(tmp_path: Path, llama_dir: Path, scaling: dict) -> None:
    check_greedy(hf_checkpoint(tmp_path, llama_dir, "llama", rope_parameters={"rope_theta": 10000.0, **scaling}))


def test_sharded_checkpoint_loads(tmp_path: Path, llama_dir: Path) -> None:
    folder = hf_checkpoint(tmp_path, llama_dir, "qwen2", _sharded=True)
    assert (folder / "model.safetensors.index.json").is_file()
    check_greedy(folder)


def test_bfloat16_checkpoint_is_served_in_float32_on_cpu_and_in_bfloat16_on_request(tmp_path: Path, llama_dir: Path) -> None:
    folder = hf_checkpoint(tmp_path, llama_dir, "llama", dtype="bfloat16")
    assert engine(folder).runner.dtype == torch.float32
    eng = engine(folder, dtype="bfloat16")
    assert eng.runner.dtype == torch.bfloat16
    assert len(eng.generate([eng.tokenizer.encode("hello there")], GREEDY)[0]) == GREEDY.max_tokens


def test_prompt_that_fills_max_model_len(llama_dir: Path) -> None:
    # The last token lands in the last slot of the last block: the block table is at its widest on the
    # first (and only) decode, and the prompt fills every block but that slot.
    eng = engine(llama_dir, max_model_len=64)
    prompt = [1000 + i for i in range(63)]
    ours = eng.generate([prompt], SamplingParams(temperature=0, max_tokens=1, ignore_eos=True))[0]
    ref, _ = hf_greedy(hf_model(llama_dir), prompt, 1)
    assert ours == ref
    long_prompt = [1000 + i for i in range(40)]
    ours = eng.generate([long_prompt], SamplingParams(temperature=0, max_tokens=24, ignore_eos=True))[0]
    assert ours == hf_greedy(hf_model(llama_dir), long_prompt, 24)[0]


def test_batched_requests_get_what_they_get_alone(llama_dir: Path) -> None:
    eng = engine(llama_dir)
    tok = eng.tokenizer
    texts = ["a", "tell me a story about a cat", "one two three four five six seven eight nine ten " * 3, "why", "blue green red"]
    batch = eng.generate([tok.encode(t) for t in texts], GREEDY)
    model = hf_model(llama_dir)
    for text, ours in zip(texts, batch, strict=True):
        ref, ref_logprobs = hf_greedy(model, tok.encode(text), GREEDY.max_tokens)
        assert_same_or_tied(ours, ref, ref_logprobs)


def test_string_prompts_with_a_padding_tokenizer_encode_and_generate_as_transformers(tmp_path: Path, llama_dir: Path) -> None:
    """A sentence-transformers-style tokenizer.json pads every input to 128 and truncates there;
    transformers ignores both unless asked, so a 6-word prompt is a handful of tokens and a long one
    is whole."""
    import json
    import shutil

    from transformers import AutoTokenizer

    folder = tmp_path / "padded"
    shutil.copytree(llama_dir, folder)
    spec = json.loads((folder / "tokenizer.json").read_text())
    spec["truncation"] = {"direction": "Right", "max_length": 128, "strategy": "LongestFirst", "stride": 0}
    spec["padding"] = {"strategy": {"Fixed": 128}, "direction": "Right", "pad_to_multiple_of": None,
                       "pad_id": 0, "pad_type_id": 0, "pad_token": "[PAD]"}  # fmt: skip
    (folder / "tokenizer.json").write_text(json.dumps(spec))
    eng = engine(folder)
    reference = AutoTokenizer.from_pretrained(str(folder))
    model = hf_model(folder)
    for text in ["tell me a story about cats", "count: " + " ".join(str(i) for i in range(150))]:
        ids = eng.tokenizer.encode(text)
        assert ids == reference(text)["input_ids"]
        assert 0 not in ids and (len(ids) < 10 or len(ids) > 128)
        assert eng.generate([ids], GREEDY)[0] == hf_greedy(model, ids, GREEDY.max_tokens)[0]


def test_unknown_architecture_and_missing_weights_are_clear_errors(tmp_path: Path, llama_dir: Path) -> None:
    import json
    import shutil

    folder = tmp_path / "bad"
    shutil.copytree(llama_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}))
    with pytest.raises(LoadError, match="unsupported architecture"):
        engine(folder)
    (folder / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 3}))
    with pytest.raises(LoadError, match="weights missing"):
        engine(folder)


@pytest.mark.slow
def test_a_wide_decode_batch_attends_in_length_groups_and_each_request_gets_what_it_gets_alone(
    llama_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the C++ kernel, from 16 decoding sequences on, the CPU path gathers K/V per group of
    similar context length (runner._decode_groups): every row must still see exactly its own context."""
    monkeypatch.setattr(attention, "decode_kernel", lambda: None)
    eng = engine(llama_dir)
    tok = eng.tokenizer
    texts = [" ".join(f"word{j}" for j in range(1 + 5 * i)) for i in range(20)]  # 1 to 96 words: many block widths
    groups = eng.runner._decode_groups([len(tok.encode(t)) // 16 + 1 for t in texts])
    assert len(groups) == 2 and sorted(r for rows, _ in groups for r in rows.tolist()) == list(range(20))
    batch = eng.generate([tok.encode(t) for t in texts], GREEDY)
    model = hf_model(llama_dir)
    for text, ours in zip(texts, batch, strict=True):
        ref, ref_logprobs = hf_greedy(model, tok.encode(text), GREEDY.max_tokens)
        assert_same_or_tied(ours, ref, ref_logprobs)
