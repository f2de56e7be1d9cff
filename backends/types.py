"""OpenAI wire types: what the gateway validates in a request and peeks at in a response.

Only the fields the gateway relies on are declared; unknown fields are ignored here and passed
through to the upstream untouched, because the pipeline forwards the client's own JSON object.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

Endpoint = Literal["chat/completions", "completions", "embeddings"]
ENDPOINTS: frozenset[Endpoint] = frozenset(("chat/completions", "completions", "embeddings"))
PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
Seconds = Annotated[float, msgspec.Meta(gt=0)]
Role = Literal["system", "developer", "user", "assistant", "tool", "function"]


class Timeouts(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Time limits for one upstream call, in seconds."""

    connect: Seconds = 5.0
    """Opening a TCP (and TLS) connection."""
    read: Seconds = 120.0
    """Waiting for the response headers, and then between two pieces of the body."""
    pool: Seconds = 10.0
    """Waiting for a free connection when `max_connections` are all busy."""
    total: Seconds = 600.0
    """A whole non-streamed exchange, from sending to the last byte."""


TokenId = Annotated[str, msgspec.Meta(pattern=r"^[0-9]{1,10}$")]
"""A token id as a JSON object key (logit_bias)."""


class StreamOptions(msgspec.Struct):
    include_usage: bool = False


class Message(msgspec.Struct):
    role: Role
    content: str | list[dict[str, object]] | None = None


class _Generation(msgspec.Struct, kw_only=True):
    model: str
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: PositiveInt | None = None
    max_completion_tokens: PositiveInt | None = None
    n: Annotated[int, msgspec.Meta(ge=1, le=128)] | None = None
    temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] | None = None
    top_p: Annotated[float, msgspec.Meta(ge=0, le=1)] | None = None
    presence_penalty: Annotated[float, msgspec.Meta(ge=-2, le=2)] | None = None
    frequency_penalty: Annotated[float, msgspec.Meta(ge=-2, le=2)] | None = None
    seed: int | None = None
    logit_bias: dict[TokenId, Annotated[float, msgspec.Meta(ge=-100, le=100)]] | None = None
    """Token id (as a string) -> bias, as OpenAI takes it (llama-cpp-python answers another key with a 500)."""
    user: str | None = None


class ChatRequest(_Generation):
    messages: Annotated[list[Message], msgspec.Meta(min_length=1)]


class CompletionRequest(_Generation):
    prompt: str | list[str | int | list[int]]


class EmbeddingRequest(msgspec.Struct):
    model: str
    input: str | list[str | int | list[int]]


REQUEST_TYPES: dict[Endpoint, type[ChatRequest | CompletionRequest | EmbeddingRequest]] = {
    "chat/completions": ChatRequest,
    "completions": CompletionRequest,
    "embeddings": EmbeddingRequest,
}


class PromptTokensDetails(msgspec.Struct):
    cached_tokens: int | None = 0


class Usage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    prompt_tokens_details: PromptTokensDetails | None = None

    @property
    def cached_tokens(self) -> int:
        """Prompt tokens the upstream served from its own prompt cache."""
        details = self.prompt_tokens_details
        return min(details.cached_tokens or 0, self.prompt_tokens) if details is not None else 0


class UsagePeek(msgspec.Struct):
    """Decodes only `usage` from a response or chunk, and proves the body is a JSON object."""

    usage: Usage | None = None


class UpstreamErrorBody(msgspec.Struct):
    message: Any = ""
    code: Any = None
    """A string as OpenAI sends it; vLLM, SGLang, TensorRT-LLM and OpenRouter send the HTTP status
    as a number: any JSON is read."""
    param: Any = None
    http_status_code: Any = None
    """TGI's in-stream errors carry the status here."""


class UpstreamErrorEnvelope(msgspec.Struct):
    """`{"error": {...}}` (OpenAI), `{"error": "..."}` (TGI, llama.cpp's older servers), or the
    error at the top level with `"object": "error"` (vLLM before 0.10, SGLang, TensorRT-LLM)."""

    error: UpstreamErrorBody | str | None = None
    object: Any = None
    message: Any = None
    code: Any = None
    param: Any = None


def content_text(content: object) -> str:
    """A message's text: the string itself, or its text parts joined by newlines (images, audio
    and files are not text). The one rule for every reader of a message: router, cache, metering, echo."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            p["text"] for p in content if isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
        )
    return ""
