"""Assertions on OpenAI-shaped errors: `{"error": {"message", "type", "param", "code"}}`."""

from __future__ import annotations

from typing import Any

import httpx


def openai_error(response: httpx.Response) -> dict[str, Any]:
    """The error object of `response`, once its shape is OpenAI's (exactly the four fields, a message)."""
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"], error
    return error


def assert_openai_error(
    response: httpx.Response, status: int, code: str | None = None, param: str | None = None, type: str | None = None
) -> dict[str, Any]:
    """`response` is an OpenAI-shaped error with `status` (and `code`, `param`, `type` when given)."""
    assert response.status_code == status, response.text
    assert response.headers["x-request-id"]
    error = openai_error(response)
    if code is not None:
        assert error["code"] == code, error
    if param is not None:
        assert error["param"] == param, error
    if type is not None:
        assert error["type"] == type, error
    if status in (429, 503):
        assert int(response.headers["retry-after"]) >= 1
    return error
