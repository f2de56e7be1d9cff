"""Embedder throughput: the gateway's ONNX Runtime embedder against sentence-transformers' torch
CPU path, same model (all-MiniLM-L6-v2), same texts, one run.

    python -m loadtest.bench_embedder            # batch 1 and 16, 200 rounds each; a mixed batch of 32

The mixed batch is what a burst of real requests makes of the micro-batcher: one pasted text of
about 160 tokens among 31 short questions. sentence-transformers pads a batch to its longest text;
the gateway's embedder runs texts of like length together.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable, Sequence

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


def timed(fn: Callable[[Sequence[str]], object], texts: Sequence[str], rounds: int) -> list[float]:
    for _ in range(10):
        fn(texts)
    out = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn(texts)
        out.append(time.perf_counter() - start)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--batches", default="1,16")
    args = parser.parse_args()

    import onnxruntime
    import torch
    from sentence_transformers import SentenceTransformer

    from gateway.cache.embedder import OnnxEmbedder, bundled_model_dir

    onnx = OnnxEmbedder()
    st = SentenceTransformer(str(bundled_model_dir()), device="cpu")
    lines = [
        "| batch | torch (sentence-transformers) p50 ms | ONNX Runtime p50 ms | texts/s torch | texts/s ONNX | speed-up |",
        "|---|---|---|---|---|---|",
    ]
    cases = [(str(b), batch_texts(int(b)), args.rounds) for b in args.batches.split(",")]
    cases.append(("32 mixed", batch_texts(32, mixed=True), max(1, args.rounds // 10)))
    for name, texts, rounds in cases:
        with torch.inference_mode():
            t_st = timed(lambda t: st.encode(list(t), normalize_embeddings=True, batch_size=len(t)), texts, rounds)
        t_onnx = timed(onnx.embed_now, texts, rounds)
        p_st, p_onnx = statistics.median(t_st), statistics.median(t_onnx)
        cells = [f"{p_st * 1e3:.2f}", f"{p_onnx * 1e3:.2f}", f"{len(texts) / p_st:,.0f}", f"{len(texts) / p_onnx:,.0f}"]
        cells.append(f"{p_st / p_onnx:.2f}x")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    onnx.close()
    extra = f", torch {torch.__version__}, onnxruntime {onnxruntime.__version__}"
    print("\n".join([*lines, "", *footer("loadtest.bench_embedder", extra)]))


if __name__ == "__main__":
    main()
