"""Backends: anything that answers OpenAI requests. Never imports `gateway`."""
