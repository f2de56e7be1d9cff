"""The HTTP surface: ASGI handlers, replies, the request-context middleware, the OpenAPI document."""
