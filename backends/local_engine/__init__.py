"""The bundled inference engine (paged KV cache, continuous batching). Not built yet: see issue 6."""
