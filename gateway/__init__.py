"""An OpenAI-compatible LLM gateway: routing, caching and resilience in front of model pools.

The app factory is `gateway.app:create_app`; importing this package loads nothing else, so that
`gateway.routing` and `gateway.cache` can be used without the web framework or the HTTP client.
"""
