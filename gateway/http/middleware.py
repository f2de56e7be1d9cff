"""The outermost ASGI wrapper: a request id on every response, and a last-resort error boundary."""

from __future__ import annotations

import logging
import os
import re

from gateway.errors import APIError
from gateway.http.asgi import Message, Receive, Scope, Send
from gateway.http.replies import error_reply

log = logging.getLogger("gateway")
_SAFE_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")


def request_id(scope: Scope) -> bytes:
    """The client's `x-request-id` when it is safe to echo, else a fresh one."""
    for name, value in scope["headers"]:
        if name == b"x-request-id" and _SAFE_ID.match(value):
            return bytes(value)
    return b"req_" + os.urandom(12).hex().encode()


class RequestContext:
    """Adds `x-request-id` to every response and turns an unexpected exception into a 500."""

    def __init__(self, app: object) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)  # type: ignore[operator, no-any-return]
        rid = request_id(scope)
        scope.setdefault("state", {})["request_id"] = rid.decode()
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", rid)]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)  # type: ignore[operator]
        except Exception:
            log.exception("unhandled error in request %s", rid.decode())
            if started:
                raise
            reply = error_reply(APIError("The server had an error while processing your request."))
            await send_with_id({"type": "http.response.start", "status": reply.status, "headers": reply.headers})
            await send({"type": "http.response.body", "body": reply.body})
