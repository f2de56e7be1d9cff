"""An OpenAI-compatible LLM gateway: routing, caching and resilience in front of model pools."""

from gateway.app import create_app

__all__ = ["create_app"]
