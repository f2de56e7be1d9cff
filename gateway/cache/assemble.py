"""A streamed answer put back together as the completion a non-streamed request would have got,
so that it can be stored. Pure: feed it each event's `data`, then ask for the body.

Content and refusals are concatenated; tool calls are merged by their index (id, type and name
from the first piece, arguments concatenated); the finish reason, usage, id, model, created and
system_fingerprint come from the events that carry them.
"""

from __future__ import annotations

from typing import Any

import msgspec


class Assembler:
    def __init__(self, chat: bool) -> None:
        self._chat = chat
        self._head: dict[str, Any] = {}
        self._choices: dict[int, dict[str, Any]] = {}
        self._usage: Any = None

    def feed(self, data: bytes) -> None:
        event = msgspec.json.decode(data)
        if not isinstance(event, dict):
            return
        for name in ("id", "model", "created", "system_fingerprint"):
            if name in event and name not in self._head:
                self._head[name] = event[name]
        if event.get("usage") is not None:
            self._usage = event["usage"]
        for piece in event.get("choices") or []:
            self._add(piece)

    def _add(self, piece: dict[str, Any]) -> None:
        choice = self._choices.setdefault(piece.get("index", 0), {"content": [], "refusal": [], "tools": {}, "role": "assistant"})
        if piece.get("finish_reason") is not None:
            choice["finish_reason"] = piece["finish_reason"]
        if not self._chat:
            choice["content"].append(piece.get("text") or "")
            return
        delta = piece.get("delta") or {}
        choice["role"] = delta.get("role") or choice["role"]
        for key in ("content", "refusal"):
            if delta.get(key):
                choice[key].append(delta[key])
        for call in delta.get("tool_calls") or []:
            merged = choice["tools"].setdefault(
                call.get("index", 0), {"id": None, "type": "function", "name": "", "arguments": []}
            )
            merged["id"] = merged["id"] or call.get("id")
            merged["type"] = call.get("type") or merged["type"]
            function = call.get("function") or {}
            merged["name"] = merged["name"] or function.get("name") or ""
            merged["arguments"].append(function.get("arguments") or "")

    def body(self) -> bytes:
        choices = [self._choice(index, c) for index, c in sorted(self._choices.items())]
        completion = {
            **self._head,
            "object": "chat.completion" if self._chat else "text_completion",
            "choices": choices,
            "usage": self._usage,
        }
        return msgspec.json.encode(completion)

    def _choice(self, index: int, c: dict[str, Any]) -> dict[str, Any]:
        finish = c.get("finish_reason")
        if not self._chat:
            return {"index": index, "text": "".join(c["content"]), "finish_reason": finish, "logprobs": None}
        message: dict[str, Any] = {"role": c["role"], "content": "".join(c["content"]) or None}
        message["refusal"] = "".join(c["refusal"]) or None
        if c["tools"]:
            message["tool_calls"] = [
                {"id": t["id"], "type": t["type"], "function": {"name": t["name"], "arguments": "".join(t["arguments"])}}
                for _, t in sorted(c["tools"].items())
            ]
        return {"index": index, "message": message, "finish_reason": finish, "logprobs": None}
