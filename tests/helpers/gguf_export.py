"""Writes a Hugging Face Llama checkpoint with a WordPiece tokenizer (the engine's tiny random
models, `backends/local_engine/tiny.py`) as a GGUF file that llama.cpp loads: the same weights,
the same vocabulary, the same chat template.

Done with the `gguf` package the way llama.cpp's own `convert_hf_to_gguf.py` (b6xxx, the copy
vendored in llama-cpp-python 0.3.36) does it for `LlamaForCausalLM` and for BERT's vocabulary:
- Q and K projections permuted from Hugging Face's rotate-half layout to the interleaved pairs
  llama.cpp's RoPE expects (`LlamaModel.permute`);
- the WordPiece vocabulary as GGUF's `bert` tokenizer model, in llama.cpp's "phantom space" form
  (a word-initial piece gets a leading U+2581, a `##` continuation loses its `##`);
- [CLS] as BOS and added to every prompt, [SEP] as EOS and never added (the tiny models'
  tokenizer adds BOS only).

    python -m tests.helpers.gguf_export CHECKPOINT OUT.gguf [--type f32|f16|q8_0]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import gguf
import numpy as np
from safetensors.numpy import load_file

TYPES = {
    "f32": (gguf.LlamaFileType.ALL_F32, gguf.GGMLQuantizationType.F32),
    "f16": (gguf.LlamaFileType.MOSTLY_F16, gguf.GGMLQuantizationType.F16),
    "q8_0": (gguf.LlamaFileType.MOSTLY_Q8_0, gguf.GGMLQuantizationType.Q8_0),
}


def export(checkpoint: Path, out: Path, kind: str = "f32") -> Path:
    file_type, weight_type = TYPES[kind]
    config = json.loads((checkpoint / "config.json").read_text())
    if config.get("model_type") != "llama":
        raise ValueError(f"{checkpoint}: only Llama checkpoints (model_type {config.get('model_type')!r})")
    heads, kv_heads, layers = config["num_attention_heads"], config["num_key_value_heads"], config["num_hidden_layers"]
    hidden = config["hidden_size"]
    writer = gguf.GGUFWriter(str(out), "llama")
    writer.add_name(checkpoint.name)
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(hidden)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(hidden // heads)
    writer.add_rope_freq_base(float(config.get("rope_theta", 10000.0)))
    writer.add_layer_norm_rms_eps(float(config["rms_norm_eps"]))
    writer.add_vocab_size(config["vocab_size"])
    writer.add_file_type(file_type)
    _add_tokenizer(writer, checkpoint)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, layers)
    tensors = load_file(str(checkpoint / "model.safetensors"))
    if config.get("tie_word_embeddings") and "lm_head.weight" not in tensors:
        tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"]
    for name, data in tensors.items():
        data = data.astype(np.float32)
        if name.endswith("q_proj.weight"):
            data = _permute(data, heads)
        elif name.endswith("k_proj.weight"):
            data = _permute(data, kv_heads)
        target = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if target is None:
            raise ValueError(f"no GGUF name for tensor {name}")
        if data.ndim == 1 or weight_type == gguf.GGMLQuantizationType.F32:  # norms stay f32, as llama.cpp keeps them
            writer.add_tensor(target, data)
        elif weight_type == gguf.GGMLQuantizationType.F16:
            writer.add_tensor(target, data.astype(np.float16))
        else:
            writer.add_tensor(target, gguf.quants.quantize(data, weight_type), raw_dtype=weight_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def _permute(weights: np.ndarray, n_head: int) -> np.ndarray:
    """Hugging Face's rotate-half rows of each head back to interleaved pairs (convert_hf_to_gguf)."""
    return weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)


def _add_tokenizer(writer: gguf.GGUFWriter, checkpoint: Path) -> None:
    spec = json.loads((checkpoint / "tokenizer.json").read_text())
    meta = json.loads((checkpoint / "tokenizer_config.json").read_text())
    if spec["model"]["type"] != "WordPiece":
        raise ValueError(f"{checkpoint}: a WordPiece tokenizer is expected, not {spec['model']['type']}")
    vocab: dict[str, int] = spec["model"]["vocab"]
    tokens = [""] * len(vocab)
    for piece, index in vocab.items():
        tokens[index] = piece
    special = {t["content"] for t in spec.get("added_tokens", []) if t.get("special")}
    writer.add_tokenizer_model("bert")
    writer.add_tokenizer_pre("default")
    writer.add_token_list([_phantom(t) for t in tokens])
    writer.add_token_types(
        [
            gguf.TokenType.UNKNOWN if t == "[UNK]" else gguf.TokenType.CONTROL if t in special else gguf.TokenType.NORMAL
            for t in tokens
        ]
    )
    writer.add_bos_token_id(vocab[meta["bos_token"]])
    writer.add_eos_token_id(vocab[meta["eos_token"]])
    writer.add_unk_token_id(vocab["[UNK]"])
    writer.add_pad_token_id(vocab["[PAD]"])
    writer.add_sep_token_id(vocab[meta["eos_token"]])
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    writer.add_add_sep_token(False)
    if meta.get("chat_template"):
        writer.add_chat_template(meta["chat_template"])


def _phantom(token: str) -> str:
    if token.startswith("[") and token.endswith("]"):
        return token
    return token[2:] if token.startswith("##") else "\u2581" + token


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--type", choices=sorted(TYPES), default="f32")
    args = parser.parse_args()
    print(export(args.checkpoint, args.out, args.type))


if __name__ == "__main__":
    main()
