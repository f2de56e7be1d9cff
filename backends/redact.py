"""Secrets a deployment is configured with, kept out of everything an upstream sends back.

An upstream may quote what it was sent: its error may carry the `Authorization` header in its
`code`, a proxy's 500 may print a `headers:` value. Whatever reaches a client or a log from an
upstream passes through the deployment's `Redactor` first.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from urllib.parse import parse_qsl, urlsplit

MASK = "***"
SHORTEST = 6
"""Secrets shorter than this are not searched for (they would blank ordinary words)."""
_BEARER = r"(?i:bearer)\s+[^\s\"',;]+"
"""Any bearer credential an error quotes, whoever it belongs to."""


def secrets_of(api_key: str | None, headers: Mapping[str, str] | None, base_url: str) -> list[str]:
    """A deployment's secrets: its key, its extra headers' values (and the parts of a value such as
    `key=SECRET`), the user and password in its URL and its query's values."""
    found = [api_key or ""]
    for value in (headers or {}).values():
        found += [value, *re.split(r"[\s=:;,]+", value)]
    url = urlsplit(base_url)
    found += [url.username or "", url.password or "", *(v for _, v in parse_qsl(url.query))]
    return [s for s in found if len(s) >= SHORTEST]


class Redactor:
    def __init__(self, secrets: Iterable[str]) -> None:
        words = sorted(set(secrets), key=len, reverse=True)  # the longest first: a secret inside another
        self._words = [w.encode() for w in words]
        self._text = re.compile("|".join([*(re.escape(w) for w in words), _BEARER]))
        self._bytes = re.compile(b"|".join(re.escape(w) for w in self._words)) if words else None

    def text(self, value: str) -> str:
        """`value` with every secret and bearer credential blanked."""
        return self._text.sub(MASK, value)

    def body(self, data: bytes) -> bytes:
        """An answer's bytes with the deployment's own secrets blanked (a fast check first: on the
        hot path, for deployments that have secrets)."""
        if self._bytes is None or not any(w in data for w in self._words):
            return data
        return self._bytes.sub(MASK.encode(), data)
