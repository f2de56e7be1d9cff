"""The checkpoint's tokenizer (tokenizer.json), its chat template, and incremental detokenization."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
import jinja2.sandbox
from tokenizers import Tokenizer as _HFTokenizer

from backends.local_engine.errors import InvalidRequest, LoadError


class Tokenizer:
    """Encodes prompts, renders chat messages through the checkpoint's template, decodes outputs."""

    def __init__(self, folder: Path) -> None:
        path = folder / "tokenizer.json"
        if not path.is_file():
            raise LoadError(f"{folder}: no tokenizer.json (only fast tokenizers are supported)")
        self._tok = _HFTokenizer.from_file(str(path))
        # A tokenizer.json may record padding and truncation (sentence-transformers' pad every input
        # to 128 and cut it there); transformers turns both off unless a call asks, and so do we.
        self._tok.no_padding()
        self._tok.no_truncation()
        meta = _read_json(folder / "tokenizer_config.json")
        self.bos_token = _token_text(meta.get("bos_token"))
        self.eos_token = _token_text(meta.get("eos_token"))
        template_file = folder / "chat_template.jinja"
        template = template_file.read_text() if template_file.is_file() else meta.get("chat_template")
        if isinstance(template, list):  # [{"name": "default", "template": ...}, ...]
            template = next((t["template"] for t in template if t.get("name") == "default"), None)
        self.chat_template: str | None = template
        self._template = _compile(template) if template else None
        self.eos_token_id = self._tok.token_to_id(self.eos_token) if self.eos_token else None

    @property
    def vocab_size(self) -> int:
        return int(self._tok.get_vocab_size(with_added_tokens=True))

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=add_special_tokens).ids)

    def decode(self, ids: Sequence[int]) -> str:
        return str(self._tok.decode(list(ids), skip_special_tokens=True))

    def token_text(self, token_id: int) -> str:
        return self.decode([token_id]) or (self._tok.id_to_token(token_id) or "")

    def render_chat(self, messages: list[dict[str, Any]], tools: list[Any] | None = None) -> str:
        if self._template is None:
            raise InvalidRequest("this model has no chat template; use /v1/completions", code="no_chat_template")
        try:
            return self._template.render(
                messages=messages,
                tools=tools,
                add_generation_prompt=True,
                bos_token=self.bos_token or "",
                eos_token=self.eos_token or "",
            )
        except jinja2.TemplateError as exc:
            raise InvalidRequest(f"the chat template refused these messages: {exc}", param="messages") from exc

    def encode_chat(self, messages: list[dict[str, Any]], tools: list[Any] | None = None) -> list[int]:
        # The template writes the special tokens itself (BOS included), as transformers' apply_chat_template.
        return self.encode(self.render_chat(messages, tools), add_special_tokens=False)


class Detokenizer:
    """Turns a sequence's output tokens into text deltas without splitting a character: a few prompt
    tokens lead the window so that word-initial spaces decode as they do mid-text."""

    def __init__(self, tokenizer: Tokenizer, prompt: Sequence[int]) -> None:
        self._tok = tokenizer
        self._ids = list(prompt[-4:])
        self._prefix = 0
        self._read = len(self._ids)
        self.text = ""

    def push(self, token_id: int) -> str:
        self._ids.append(token_id)
        before = self._tok.decode(self._ids[self._prefix : self._read])
        after = self._tok.decode(self._ids[self._prefix :])
        if len(after) <= len(before) or after.endswith("\ufffd"):
            return ""  # an incomplete UTF-8 sequence, or a token that decodes to nothing yet
        delta = after[len(before) :]
        self._prefix, self._read = self._read, len(self._ids)
        self.text += delta
        return delta


def _compile(template: str) -> jinja2.Template:
    def raise_exception(message: str) -> None:
        raise jinja2.TemplateError(message)

    env = jinja2.sandbox.ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
    )
    env.filters["tojson"] = lambda value, indent=None: json.dumps(value, ensure_ascii=False, indent=indent)
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    try:
        return env.from_string(template)
    except jinja2.TemplateError as exc:
        raise LoadError(f"the chat template does not compile: {exc}") from exc


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise LoadError(f"{path}: {exc}") from exc
    return data if isinstance(data, dict) else {}


def _token_text(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None
