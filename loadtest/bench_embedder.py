"""Embedder throughput: the gateway's ONNX Runtime embedder against sentence-transformers' torch
CPU path, same model (all-MiniLM-L6-v2), same texts, one run.

    python -m loadtest.bench_embedder            # batch 1 and 16, 200 rounds each; a mixed batch of 32

Each path's rate is also given in GFLOP/s of the model's own work (its matrix products over the
tokens it was given, padding included), next to this machine's rate for one matrix product of the
model's largest shape through torch and through ONNX Runtime, timed in turn with them: how far
either path is from what the machine does in fp32. Paths take turns in blocks of 20 calls (see
`timed`): the speed of a shared VM drifts within a minute, and a ratio of two runs made a minute
apart measures the drift too.

The mixed batch is what a burst of real requests makes of the micro-batcher: one pasted text of
about 160 tokens among 31 short questions. sentence-transformers pads a batch to its longest text;
the gateway's embedder runs texts of like length together.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from loadtest.report import footer

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TEXTS = [
    "How do I reset my password on the mobile app?",
    "Summarise the main causes of the French Revolution in three bullet points.",
    "What is the difference between a list and a tuple in Python?",
    "Book a table for four at an Italian restaurant near the station at 8pm.",
    "Explain why the sky is blue to a ten-year-old.",
    "Write a SQL query that returns the ten most recent orders per customer.",
    "Translate 'see you tomorrow' into German and Japanese.",
    "Is it safe to take ibuprofen with coffee?",
]


PASTED = (
    "Here is a paragraph I pasted from our onboarding guide: new employees receive a laptop on their first day, "
    "must complete the security training within two weeks, and should book a meeting with their manager to agree "
    "on goals for the first quarter. "
) * 3 + "Can you turn this into a short checklist?"


def batch_texts(batch: int, mixed: bool = False) -> list[str]:
    texts = [TEXTS[i % len(TEXTS)] + f" ({i})" for i in range(batch)]
    return [PASTED, *texts[1:]] if mixed else texts


def model_flops(config: dict[str, Any], lengths: Sequence[int]) -> float:
    """Floating-point operations of one BERT encoder pass over sequences padded to `lengths`: the
    projections and the feed-forward per token, the attention scores and their use per pair of
    tokens (embeddings, norms and activations are a few percent and not counted)."""
    h, ff, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    per_token = 4 * h * h + 2 * h * ff
    per_pair = 2 * h
    return 2.0 * layers * sum(n * per_token + n * n * per_pair for n in lengths)


def products(tokens: int, config: dict[str, Any]) -> tuple[float, Callable[[], object], Callable[[], object]]:
    """One fp32 product (tokens x hidden) @ (hidden x intermediate), the model's largest: its
    floating-point operations, and a call that runs it through torch and one through ONNX Runtime."""
    import numpy as np
    import onnx
    import onnxruntime
    import torch
    from onnx import TensorProto, helper

    h, ff = config["hidden_size"], config["intermediate_size"]
    rng = np.random.default_rng(0)
    a = rng.standard_normal((tokens, h), dtype=np.float32)
    b = rng.standard_normal((h, ff), dtype=np.float32)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])],
        "product",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [tokens, h])],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [tokens, ff])],
        [onnx.numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return 2.0 * tokens * h * ff, lambda: torch.mm(ta, tb), lambda: session.run(None, {"a": a})


def timed(calls: Sequence[Callable[[], object]], rounds: int, block: int = 20) -> list[float]:
    """The median seconds of each call over `rounds` timings. The calls take turns in blocks of
    `block` timings, so that a change in the machine's speed during the run (common on shared VMs)
    falls on all of them alike; each block starts with three untimed calls, which also outlast the
    spinning of the other runtime's threads after its block (torch's and ONNX Runtime's pools both
    spin for a while after a call)."""
    for fn in calls:
        for _ in range(7):
            fn()
    times: list[list[float]] = [[] for _ in calls]
    while len(times[0]) < rounds:
        for fn, out in zip(calls, times, strict=True):
            for _ in range(3):
                fn()
            for _ in range(min(block, rounds - len(out))):
                begin = time.perf_counter()
                fn()
                out.append(time.perf_counter() - begin)
    return [statistics.median(out) for out in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--batches", default="1,16")
    parser.add_argument(
        "--against",
        metavar="FILE.onnx",
        help="another export of the model (an earlier export version's file in the cache, say), timed in turn with "
        "the gateway's: its p50 and the gateway's speed-up over it in two more columns, and its vectors' least cosine",
    )
    args = parser.parse_args()

    import onnxruntime
    import torch
    from sentence_transformers import SentenceTransformer

    from gateway.cache.embedder import OnnxEmbedder, bundled_model_dir, length_groups

    onnx = OnnxEmbedder()
    st = SentenceTransformer(str(bundled_model_dir()), device="cpu")
    config = json.loads((bundled_model_dir() / "config.json").read_text())
    lines = [
        "| batch | torch (sentence-transformers) p50 ms | ONNX Runtime p50 ms | texts/s torch | texts/s ONNX | speed-up "
        "| GFLOP/s torch | GFLOP/s ONNX |" + (" other export p50 ms | speed-up over it |" if args.against else ""),
        "|---|---|---|---|---|---|---|---|" + ("---|---|" if args.against else ""),
    ]
    other = None
    if args.against:
        other = OnnxEmbedder()
        other._session = onnxruntime.InferenceSession(args.against, providers=onnxruntime.get_available_providers())
    cases = [(str(b), batch_texts(int(b)), args.rounds) for b in args.batches.split(",")]
    cases.append(("32 mixed", batch_texts(32, mixed=True), max(1, args.rounds // 10)))
    notes: list[str] = []
    for name, texts, rounds in cases:
        lengths = [len(e.ids) for e in onnx._tokenizer.encode_batch(texts)]
        calls: list[Callable[[], object]] = [
            partial(st.encode, list(texts), normalize_embeddings=True, batch_size=len(texts)),
            partial(onnx.embed_now, texts),
        ]
        if other is not None:
            calls.append(partial(other.embed_now, texts))
        if name == "16":  # the machine's own rate for the model's largest product, at this batch's padded size
            product_flops, *product_calls = products(len(lengths) * max(lengths), config)
            calls += product_calls
        with torch.inference_mode():
            p_st, p_onnx, *p_rest = timed(calls, rounds)
        p_other, p_products = (p_rest[0], p_rest[1:]) if other is not None else (None, p_rest)
        padded_st = [max(lengths)] * len(lengths)  # sentence-transformers pads the batch to its longest text
        padded_onnx = [max(lengths[i] for i in g) for g in length_groups(lengths) for _ in g]
        rate_st = model_flops(config, padded_st) / p_st / 1e9
        cells = [f"{p_st * 1e3:.2f}", f"{p_onnx * 1e3:.2f}", f"{len(texts) / p_st:,.0f}", f"{len(texts) / p_onnx:,.0f}"]
        cells += [f"{p_st / p_onnx:.2f}x", f"{rate_st:.1f}", f"{model_flops(config, padded_onnx) / p_onnx / 1e9:.1f}"]
        if p_other is not None:
            cells += [f"{p_other * 1e3:.2f}", f"{p_other / p_onnx:.2f}x"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
        if p_products:
            rate_torch, rate_ort = (product_flops / t / 1e9 for t in p_products)
            h, ff = config["hidden_size"], config["intermediate_size"]
            notes += [
                f"batch 16's largest product alone ({len(lengths) * max(lengths)} x {h} @ {h} x {ff}, fp32), "
                f"timed in turn with the rows above: torch {rate_torch:.1f} GFLOP/s, ONNX Runtime {rate_ort:.1f} GFLOP/s",
                f"3x torch at batch 16 needs {3 * rate_st:.1f} GFLOP/s of model work: "
                f"{3 * rate_st / max(rate_torch, rate_ort):.2f}x the faster product's rate",
            ]
    if other is not None:
        texts = ["", PASTED * 3, *(t for i in range(32) for t in batch_texts(i + 1, mixed=i % 4 == 0))]
        least = float((onnx.embed_now(texts) * other.embed_now(texts)).sum(axis=1).min())
        notes.append(f"least cosine between the two exports' vectors over {len(texts)} texts: {least:.7f}")
        other.close()
    onnx.close()
    lines += ["", *notes] if notes else []
    extra = f", torch {torch.__version__}, onnxruntime {onnxruntime.__version__}"
    print("\n".join([*lines, "", *footer("loadtest.bench_embedder", extra)]))


if __name__ == "__main__":
    main()
