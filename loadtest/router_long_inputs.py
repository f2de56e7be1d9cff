"""How long the shipped router takes to decide on very long requests, the embedding excluded.

The instruction split and the cue counting read a bounded part of a turn (`gateway.routing.task`,
`SCAN_CHARS`), so the decision's time should not grow with the document. Three requests: a short
question after a 1,000,000-character document, the same on the line after a 1,000,000-character
log (timestamped lines), and one block of 2,000,000 characters with no question. Each is decided
`--rounds` times (task split, features, network, reasons) with a fixed vector in place of the
embedding; the median and the slowest are printed.

    python -m loadtest.router_long_inputs [--rounds 7]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from gateway.routing.classifier import ComplexityModel
from loadtest.report import footer

ROOT = Path(__file__).resolve().parents[1]

CLAUSE = "The tenant shall keep the premises in good repair and shall not sublet without consent. "


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    model = ComplexityModel.load(ROOT / "config" / "router" / "model.json")
    document = (CLAUSE * (1_000_000 // len(CLAUSE) + 1))[:1_000_000]
    log = "".join(f"2024-03-{i % 28 + 1:02d} 10:{i % 60:02d} worker-{i % 9} timeout after {i % 500} ms\n" for i in range(22_000))
    requests = {
        "a question after a 1,000,000-character document": {"prompt": f"{document}\n\nWhat is the tenant's name?"},
        "a question on the line after a 1,000,000-character log": {"prompt": f"{log[:1_000_000]}\nWhich worker timed out most?"},
        "one block of 2,000,000 characters": {"prompt": ("word " * 400_000)[:2_000_000]},
    }
    vector = np.zeros(model.dim, dtype=np.float32)
    vector[0] = 1.0
    print("| request | median | slowest |")
    print("|---|---|---|")
    for name, payload in requests.items():
        times = []
        for _ in range(args.rounds):
            start = time.perf_counter()
            model.decide(payload, vector)
            times.append(time.perf_counter() - start)
        print(f"| {name} | {statistics.median(times) * 1000:.1f} ms | {max(times) * 1000:.1f} ms |")
    print()
    print("\n".join(footer("loadtest.router_long_inputs")))


if __name__ == "__main__":
    main()
