"""The engine's errors. Each knows the HTTP status and OpenAI error type it becomes."""

from __future__ import annotations


class EngineError(Exception):
    """Base of every error the engine raises on purpose."""

    status = 500
    type = "server_error"
    code: str | None = None


class LoadError(EngineError):
    """A checkpoint folder that cannot be served: missing files, an unknown architecture, bad shapes."""

    code = "model_load_failed"


class InvalidRequest(EngineError):
    """A request the engine refuses as given: bad sampling values, a prompt too long for the model,
    or one that could never fit in the KV cache."""

    status = 400
    type = "invalid_request_error"

    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.param = param
        self.code = code


class EngineOverloaded(EngineError):
    """The waiting queue is full; the client may retry later."""

    status = 503
    type = "server_error"
    code = "engine_overloaded"


class EngineDead(EngineError):
    """The engine loop stopped after an internal failure; the server must be restarted."""

    status = 500
    code = "engine_dead"
