"""The Backend protocol: what the gateway needs from anything that answers OpenAI requests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from backends.types import Endpoint, Usage


@dataclass(slots=True)
class Completion:
    """A whole (non-streamed) answer: the upstream's JSON body as it came, and its usage."""

    body: bytes
    usage: Usage | None


class EventStream(Protocol):
    """An opened streamed answer. Iterating yields each SSE event's `data` payload, `[DONE]` excluded;
    it ends only after the upstream's `[DONE]`, and raises an `APIError` if the stream breaks."""

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


class Backend(Protocol):
    """Something that answers OpenAI requests: an HTTP upstream, or the bundled engine.

    `payload` is the client's JSON object with `model` already set for this backend; unknown
    fields must be passed on unchanged. Every failure is raised as a `backends.errors.APIError`.
    """

    endpoints: frozenset[Endpoint]
    """What it answers (an OpenAI-compatible server is taken to answer all three)."""

    async def complete(self, endpoint: Endpoint, payload: dict[str, object], timeout: float | None = None) -> Completion:
        """The whole answer. `timeout`: the caller's remaining time budget; when it runs out first,
        raise `DeadlineExceeded` (the backend's own time limits raise `UpstreamTimeout`)."""
        ...

    async def stream(self, endpoint: Endpoint, payload: dict[str, object]) -> EventStream:
        """Start a streamed answer; returns once the upstream has accepted the request."""
        ...

    async def aclose(self) -> None: ...
