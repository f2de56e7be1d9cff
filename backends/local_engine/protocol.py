"""OpenAI wire shapes for the engine's server: requests parsed and checked, responses and chunks built."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import msgspec

from backends.local_engine.engine import Delta, TokenLogprob
from backends.local_engine.errors import InvalidRequest
from backends.local_engine.sampling import SamplingParams
from backends.local_engine.tokenizer import Tokenizer

UNSUPPORTED = ("best_of", "suffix", "echo", "logit_bias", "audio", "modalities", "prediction")


@dataclass(slots=True)
class _Common:
    model: str
    stream: bool
    include_usage: bool
    fields: dict[str, Any]
    defaults: dict[str, float]
    logprobs_wanted: int | None = None

    def sampling(self, num_prompt: int, max_model_len: int) -> SamplingParams:
        f = self.fields
        max_tokens = _int(f, "max_completion_tokens", _int(f, "max_tokens", None))
        if max_tokens is None:
            max_tokens = max(1, max_model_len - num_prompt)
        stop = f.get("stop")
        stops = (stop,) if isinstance(stop, str) else tuple(stop) if isinstance(stop, list) else ()
        if stop is not None and not all(isinstance(s, str) for s in stops):
            raise InvalidRequest("stop must be a string or a list of strings", param="stop")
        return SamplingParams(
            n=_int(f, "n", 1) or 1,
            temperature=_num(f, "temperature", self.defaults.get("temperature", 1.0)),
            top_p=_num(f, "top_p", self.defaults.get("top_p", 1.0)),
            top_k=max(0, _int(f, "top_k", int(self.defaults.get("top_k", 0))) or 0),
            min_p=_num(f, "min_p", self.defaults.get("min_p", 0.0)),
            repetition_penalty=_num(f, "repetition_penalty", self.defaults.get("repetition_penalty", 1.0)),
            presence_penalty=_num(f, "presence_penalty", 0.0),
            frequency_penalty=_num(f, "frequency_penalty", 0.0),
            seed=_int(f, "seed", None),
            max_tokens=max_tokens,
            min_tokens=_int(f, "min_tokens", 0) or 0,
            stop=stops,
            stop_token_ids=tuple(_int_list(f, "stop_token_ids")),
            ignore_eos=bool(f.get("ignore_eos", False)),
            logprobs=self.logprobs_wanted,
            include_stop_str_in_output=bool(f.get("include_stop_str_in_output", False)),
            cache_salt=f.get("cache_salt") if isinstance(f.get("cache_salt"), str) else None,
        )


@dataclass(slots=True)
class ChatRequest(_Common):
    messages: list[dict[str, Any]] = field(default_factory=list)
    tools: list[Any] | None = None


@dataclass(slots=True)
class CompletionRequest(_Common):
    prompt: str | list[int] = ""


def _decode(body: bytes) -> dict[str, Any]:
    try:
        data = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"the body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidRequest("the body must be a JSON object")
    if not isinstance(data.get("model"), str):
        raise InvalidRequest("model is required", param="model")
    for name in UNSUPPORTED:
        if data.get(name) not in (None, False, 1 if name == "best_of" else None):
            raise InvalidRequest(f"{name} is not supported by this engine", param=name)
    return data


def _common(data: dict[str, Any], defaults: dict[str, float]) -> dict[str, Any]:
    options = data.get("stream_options") or {}
    return {
        "model": data["model"],
        "stream": bool(data.get("stream", False)),
        "include_usage": bool(isinstance(options, dict) and options.get("include_usage")),
        "fields": data,
        "defaults": defaults,
    }


def parse_chat(body: bytes, defaults: dict[str, float]) -> ChatRequest:
    data = _decode(body)
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("messages must be a non-empty list", param="messages")
    clean = [_message(m, i) for i, m in enumerate(messages)]
    tools = data.get("tools") if isinstance(data.get("tools"), list) else None
    wanted = None
    if data.get("logprobs"):
        wanted = _int(data, "top_logprobs", 0) or 0
    return ChatRequest(**_common(data, defaults), logprobs_wanted=wanted, messages=clean, tools=tools)


def parse_completion(body: bytes, defaults: dict[str, float]) -> CompletionRequest:
    data = _decode(body)
    prompt = data.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
        prompt = prompt[0]
    if isinstance(prompt, list) and not all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
        raise InvalidRequest("prompt must be a string or a list of token ids (one prompt per request)", param="prompt")
    if not isinstance(prompt, str | list) or not prompt:
        raise InvalidRequest("prompt must be a non-empty string or list of token ids", param="prompt")
    logprobs = data.get("logprobs")
    wanted = _int(data, "logprobs", None) if logprobs is not None else None
    return CompletionRequest(**_common(data, defaults), logprobs_wanted=wanted, prompt=prompt)


def _message(message: Any, i: int) -> dict[str, Any]:
    if not isinstance(message, dict) or not isinstance(message.get("role"), str):
        raise InvalidRequest(f"messages[{i}] must be an object with a role", param=f"messages[{i}]")
    content = message.get("content")
    if isinstance(content, list):  # content parts: only text can be served
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise InvalidRequest("only text content parts are supported", param=f"messages[{i}].content")
            texts.append(part["text"])
        content = "".join(texts)
    elif content is not None and not isinstance(content, str):
        raise InvalidRequest(f"messages[{i}].content must be a string or a list of parts", param=f"messages[{i}].content")
    return {**message, "content": content or ""}


def _num(f: dict[str, Any], name: str, default: float) -> float:
    value = f.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidRequest(f"{name} must be a number", param=name)
    return float(value)


def _int(f: dict[str, Any], name: str, default: int | None) -> int | None:
    value = f.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(f"{name} must be an integer", param=name)
    return value


def _int_list(f: dict[str, Any], name: str) -> list[int]:
    value = f.get(name) or []
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise InvalidRequest(f"{name} must be a list of integers", param=name)
    return value


class Emitter:
    """Collects one request's deltas into a response body, or turns each into stream chunks."""

    def __init__(
        self, request_id: str, model: str, chat: bool, created: int, n: int, tokenizer: Tokenizer, logprobs: int | None
    ) -> None:
        self.request_id, self.model, self.chat, self.created = request_id, model, chat, created
        self.tokenizer = tokenizer
        self.logprobs = logprobs
        self.text = [""] * n
        self.finish: list[str | None] = [None] * n
        self.lp: list[list[TokenLogprob]] = [[] for _ in range(n)]
        self.output_tokens = [0] * n
        self.prompt_tokens = 0
        self.cached_tokens = 0

    def add(self, delta: Delta) -> None:
        i = delta.index
        self.text[i] += delta.text
        self.finish[i] = delta.finish_reason
        self.output_tokens[i] = delta.num_output_tokens
        self.prompt_tokens = delta.num_prompt_tokens
        if delta.index == 0:
            self.cached_tokens = delta.num_cached_tokens
        if delta.logprobs:
            self.lp[i].extend(delta.logprobs)

    def usage(self) -> dict[str, Any]:
        completion = sum(self.output_tokens)
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
        }

    def whole(self) -> dict[str, Any]:
        choices = []
        for i, text in enumerate(self.text):
            choice: dict[str, Any] = {"index": i, "finish_reason": self.finish[i], "logprobs": self._logprobs(self.lp[i])}
            if self.chat:
                choice["message"] = {"role": "assistant", "content": text}
            else:
                choice["text"] = text
            choices.append(choice)
        obj = "chat.completion" if self.chat else "text_completion"
        return {
            "id": self.request_id,
            "object": obj,
            "created": self.created,
            "model": self.model,
            "choices": choices,
            "usage": self.usage(),
        }

    def opening(self) -> list[dict[str, Any]]:
        if not self.chat:
            return []
        role = {"role": "assistant", "content": ""}
        return [
            self._chunk([{"index": i, "delta": role, "logprobs": None, "finish_reason": None}]) for i in range(len(self.text))
        ]

    def chunks(self, delta: Delta) -> list[dict[str, Any]]:
        self.add(delta)
        logprobs = self._logprobs(delta.logprobs or []) if delta.logprobs else None
        if not delta.text and delta.finish_reason is None and logprobs is None:
            return []
        choice: dict[str, Any] = {"index": delta.index, "logprobs": logprobs, "finish_reason": delta.finish_reason}
        if self.chat:
            choice["delta"] = {"content": delta.text} if delta.text else {}
        else:
            choice["text"] = delta.text
        return [self._chunk([choice])]

    def usage_chunk(self) -> dict[str, Any]:
        return {**self._chunk([]), "usage": self.usage()}

    def _chunk(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        obj = "chat.completion.chunk" if self.chat else "text_completion"
        return {"id": self.request_id, "object": obj, "created": self.created, "model": self.model, "choices": choices}

    def _logprobs(self, items: list[TokenLogprob]) -> dict[str, Any] | None:
        if self.logprobs is None:
            return None
        text = self.tokenizer.token_text

        def entry(token_id: int, logprob: float) -> dict[str, Any]:
            return {"token": text(token_id), "logprob": logprob, "bytes": list(text(token_id).encode())}

        if self.chat:
            return {
                "content": [{**entry(t.token_id, t.logprob), "top_logprobs": [entry(i, lp) for i, lp in t.top]} for t in items]
            }
        return {
            "tokens": [text(t.token_id) for t in items],
            "token_logprobs": [t.logprob for t in items],
            "top_logprobs": [{text(i): lp for i, lp in t.top} for t in items],
        }
