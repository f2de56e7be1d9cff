"""Does an answer meet the json_schema its request asked for? Pure.

Used by routers with `validate_json`: a small model that breaks the schema gets its request asked
again one tier up. Only a non-streamed chat completion with `response_format` of type `json_schema`
is checked; anything else passes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jsonschema
import msgspec


def breaks_schema(payload: Mapping[str, Any], body: bytes) -> str | None:
    """Why the answer in `body` breaks the request's json_schema, or None when it does not (or
    when the request asked for none)."""
    response_format = payload.get("response_format")
    if not isinstance(response_format, Mapping) or response_format.get("type") != "json_schema":
        return None
    spec = response_format.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, Mapping) else None
    if not isinstance(schema, Mapping):
        return None
    try:
        choices = msgspec.json.decode(body).get("choices") or []
        content = choices[0]["message"]["content"]
    except (msgspec.DecodeError, AttributeError, IndexError, KeyError, TypeError):
        return "no message content"
    if not isinstance(content, str):
        return "no message content"
    try:
        answer = msgspec.json.decode(content)
    except msgspec.DecodeError:
        return "not JSON"
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(answer))
    return None if error is None else f"{error.message[:120]} at {'/'.join(str(p) for p in error.absolute_path) or 'the root'}"
