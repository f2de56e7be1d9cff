"""The semantic cache (request keys, embedder, FAISS index, stores). Not built yet: see issue 4."""
