"""Routing decisions and what became of them, as JSON lines that `gateway router-train --log` reads.

Opt-in (`routing_log.path`): the lines hold the requests' messages, so they are as sensitive as
the traffic itself (never headers or keys). Each process appends to its own file (`{pid}` and
`{host}` in the path keep replicas apart); training joins every file it is given by request id.

    {"type": "decision", "id": "req_..", "router": "auto", "tier": "small", "how": "routed", "score": 0.12,
     "at": 1764800000.0, "request": {"messages": [...], "tools": [...], "response_format": {...}}}
    {"type": "outcome", "id": "req_..", "router": "auto", "tier": "medium", "why": "json_schema", "at": ...}

Outcomes, each naming the tier the request turned out to need:
- `json_schema`: the answer broke the request's json_schema and the tier above was asked;
- `escalated`: the tier's pools failed and a tier above answered (an upstream failure says little
  about difficulty: `router-train` leaves these out unless asked);
- `retry_larger`: the same request came again within `RETRY_WINDOW_S` on a larger tier (forced,
  or the larger tier's pool by name): the client was not satisfied (seen by this process only);
- `feedback`: `POST /admin/router/feedback {"request_id", "tier"}`;
- a decision with `how: forced` is itself a label: the client chose the tier.

Writes go through a queue to a thread, so a slow disk never holds a request.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import msgspec

log = logging.getLogger("gateway")

RETRY_WINDOW_S = 600.0
"""A request repeated on a larger tier within this long after it was routed counts as a retry."""
REMEMBERED = 10_000
"""Routed requests remembered for retry detection (the oldest are forgotten first)."""
REQUEST_FIELDS = ("messages", "prompt", "tools", "response_format")
"""What of a request the log keeps: what the router reads."""


def digest(payload: Mapping[str, Any]) -> str:
    """The request's content, for spotting it again (the model, sampling and stream flags aside)."""
    content = {k: payload.get(k) for k in ("messages", "prompt")}
    return hashlib.blake2b(msgspec.json.encode(content), digest_size=16).hexdigest()


def resolve_path(template: str, folder: Path) -> Path:
    path = Path(template.replace("{pid}", str(os.getpid())).replace("{host}", socket.gethostname()))
    return path if path.is_absolute() else folder / path


class DecisionLog:
    def __init__(self, path: Path, *, requests: bool = True, clock: Callable[[], float] = time.time) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.requests = requests
        self._clock = clock
        self._file = path.open("ab")
        self._queue: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._recent: OrderedDict[str, tuple[str, str, int, float]] = OrderedDict()
        """digest -> (request id, router, tier index, when) of routed requests."""
        self._thread = threading.Thread(target=self._write_lines, name="routing-log", daemon=True)
        self._thread.start()

    def decided(
        self, request_id: str, router: str, tiers: list[str], tier: str, how: str, score: float | None, payload: Mapping[str, Any]
    ) -> None:
        """A router's decision. A routed one is remembered for retries; a forced one may be a retry."""
        now = self._clock()
        line: dict[str, Any] = {"type": "decision", "id": request_id, "router": router, "tier": tier, "how": how}
        line |= {"score": None if score is None else round(score, 4), "at": round(now, 3)}
        if self.requests:
            line["request"] = {k: payload[k] for k in REQUEST_FIELDS if k in payload}
        self._put(line)
        if how == "routed":
            self._remember(digest(payload), request_id, router, tiers.index(tier), now)
        elif how == "forced":
            self.asked_again(router, tiers, tier, payload)

    def asked_again(self, router: str, tiers: list[str], tier: str, payload: Mapping[str, Any]) -> None:
        """A request on `tier` of `router` chosen by the client: a retry of a recent routed one when
        it is the same request on a larger tier."""
        key = digest(payload)
        found = self._recent.get(key)
        if found is None or found[1] != router or tier not in tiers:
            return
        request_id, _, index, when = found
        if tiers.index(tier) > index and self._clock() - when <= RETRY_WINDOW_S:
            del self._recent[key]
            self.outcome(request_id, router, tier, "retry_larger")

    def outcome(self, request_id: str, router: str | None, tier: str, why: str) -> None:
        self._put(
            {"type": "outcome", "id": request_id, "router": router, "tier": tier, "why": why, "at": round(self._clock(), 3)}
        )

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)
        self._file.close()

    def _remember(self, key: str, request_id: str, router: str, index: int, now: float) -> None:
        self._recent[key] = (request_id, router, index, now)
        self._recent.move_to_end(key)
        while len(self._recent) > REMEMBERED:
            self._recent.popitem(last=False)

    def _put(self, line: dict[str, Any]) -> None:
        self._queue.put(msgspec.json.encode(line) + b"\n")

    def _write_lines(self) -> None:
        while (line := self._queue.get()) is not None:
            try:
                self._file.write(line)
                if self._queue.empty():
                    self._file.flush()
            except OSError:  # a full or gone disk loses log lines, never requests
                log.exception("routing log: cannot write to %s", self.path)
        self._file.flush()


def labelled_rows(paths: list[Path], *, escalations: bool = False) -> list[dict[str, Any]]:
    """Labelled requests from decision logs: each logged request with the tier its last outcome
    says it needed (feedback over any other outcome, an outcome over a client's forced tier).
    Requests without outcomes, or logged without their text, are left out."""
    decisions: dict[str, dict[str, Any]] = {}
    needed: dict[str, tuple[int, str]] = {}
    rank = {"feedback": 2}
    for path in paths:
        for number, raw in enumerate(path.read_bytes().splitlines(), 1):
            if not raw.strip():
                continue
            try:
                line = msgspec.json.decode(raw)
            except msgspec.DecodeError:
                log.warning("%s:%d: not JSON, skipped", path, number)
                continue
            if not isinstance(line, dict) or "id" not in line:
                continue
            if line.get("type") == "decision":
                decisions[line["id"]] = line
                if line.get("how") == "forced":
                    needed.setdefault(line["id"], (0, line["tier"]))
            elif line.get("type") == "outcome" and (escalations or line.get("why") != "escalated"):
                weight = rank.get(line.get("why", ""), 1)
                held = needed.get(line["id"])
                if held is None or weight >= held[0]:
                    needed[line["id"]] = (weight, line["tier"])
    rows = []
    for request_id, (_, tier) in needed.items():
        decision = decisions.get(request_id)
        if decision is None or not decision.get("request"):
            continue
        rows.append(decision["request"] | {"tier": tier, "source": "traffic", "split": "train", "router": decision.get("router")})
    return rows
