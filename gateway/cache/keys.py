"""Cache keys. Pure.

The exact key hashes every field of the request that can change the answer. It is built from a
deny-list, not an allow-list: fields the gateway does not know (a server's own `top_k`,
`repetition_penalty`, `min_p`, ...) are part of the key, so an unknown knob can never make two
different requests share an answer. Only fields that cannot change the answer are left out.
The model name is replaced by the route that will answer (the resolved pool, or the tier).
What the user wrote (user turns, a completion's prompt) enters the key in a normal form: case
folded, runs of whitespace made one space, trailing `.?!` dropped (not after a digit), so "How do I reset my password?"
and "how do i reset my password" share an entry. Quoted spans ("...", '...', `...`, fenced blocks)
and text with indented lines (code) are kept as written: there case and spacing can be the answer.

The semantic namespace hashes the same fields without the conversation itself but with the system
prompt(s): two requests can only meet in the embedding index when everything but the wording of
the conversation is equal. Only the last user turn is embedded; everything before it (earlier turns,
the assistant's answers, tool results) goes into a digest that joins the namespace, so a follow-up
question ("and in 2023?") only meets follow-ups of the same conversation.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

import msgspec

from backends.types import Endpoint

NOT_ANSWER_FIELDS = frozenset(
    {"model", "stream", "stream_options", "user", "metadata", "store", "service_tier", "safety_identifier", "prompt_cache_key"}
)
"""Request fields that do not change the answer."""
CONVERSATION_FIELDS = frozenset({"messages", "prompt", "input"})

_encoder = msgspec.json.Encoder(order="sorted")


def exact_key(endpoint: Endpoint, route: str, payload: Mapping[str, Any], tenant: str = "") -> str:
    """A hex digest over the endpoint, route, tenant and every answer-determining field."""
    fields = {k: v for k, v in payload.items() if k not in NOT_ANSWER_FIELDS}
    if isinstance(messages := fields.get("messages"), list):
        fields["messages"] = [_normal_turn(m) for m in messages]
    if isinstance(prompt := fields.get("prompt"), str):
        fields["prompt"] = normal_text(prompt)
    return _digest([endpoint, route, tenant, fields])


_VERBATIM = re.compile("```.*?```|`[^`]*`|\"[^\"]*\"|'[^']*'|\u201c[^\u201d]*\u201d|\u2018[^\u2019]*\u2019", re.DOTALL)
"""Spans kept as written (typographic quotes too). Between two apostrophes ("what's ... world's") is taken for a quote too:
kept as written, which can only cost a hit, never make a wrong one."""
_SPACE = re.compile(r"\s+")
_TRAILING = ".?! \u3002\uff1f\uff01"  # and the ideographic full stop, question and exclamation marks


def normal_text(text: str) -> str:
    """What the user wrote, in the exact key's normal form (see the module's docstring)."""
    if re.search(r"\n[ \t]", text):
        return text.rstrip()  # indented lines: code, whose spacing is part of it
    parts, end = [], 0
    for quoted in _VERBATIM.finditer(text):
        parts += [_fold(text[end : quoted.start()]), quoted.group()]
        end = quoted.end()
    tail = _fold(text[end:])
    if not (stripped := tail.rstrip(_TRAILING))[-1:].isdigit():  # "5!" is a factorial: kept
        tail = stripped
    return ("".join(parts) + tail).strip()


def _fold(text: str) -> str:
    return _SPACE.sub(" ", text.casefold())


def _normal_turn(message: object) -> object:
    if not isinstance(message, dict) or message.get("role") != "user":
        return message
    content = message.get("content")
    if isinstance(content, str):
        return {**message, "content": normal_text(content)}
    if isinstance(content, list):
        return {**message, "content": [_normal_part(p) for p in content]}
    return message


def _normal_part(part: object) -> object:
    if isinstance(part, dict) and isinstance(text := part.get("text"), str):
        return {**part, "text": normal_text(text)}
    return part


def semantic_namespace(endpoint: Endpoint, route: str, payload: Mapping[str, Any], tenant: str = "") -> str:
    """A hex digest of everything that must be equal for two requests to share an answer by
    meaning: route, tenant, sampling settings, tools, response_format, and the system prompt(s)."""
    fields = {k: v for k, v in payload.items() if k not in NOT_ANSWER_FIELDS and k not in CONVERSATION_FIELDS}
    return _digest([endpoint, route, tenant, fields, system_prompts(payload)])


def system_prompts(payload: Mapping[str, Any]) -> list[Any]:
    messages = payload.get("messages")
    if not isinstance(messages, list):
        return []
    return [m.get("content") for m in messages if isinstance(m, dict) and m.get("role") in ("system", "developer")]


def _digest(value: object) -> str:
    return hashlib.blake2b(_encoder.encode(value), digest_size=16).hexdigest()


def context_digest(payload: Mapping[str, Any]) -> str:
    """A digest of the turns before the last one, system prompts excluded (they have their own place in the key)."""
    messages = payload.get("messages")
    if not isinstance(messages, list):
        return ""
    earlier = [m for m in messages[:-1] if not (isinstance(m, dict) and m.get("role") in ("system", "developer"))]
    if not earlier:
        return ""
    return hashlib.blake2b(msgspec.json.encode(earlier), digest_size=12).hexdigest()
