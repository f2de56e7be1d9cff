"""The response cache: request keys, the embedder, the FAISS index, the stores, the veto and the
two layers (exact, semantic). No web framework, no HTTP client."""
