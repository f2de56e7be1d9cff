"""The semantic cache: request keys, the embedder, FAISS index, stores (issue 4; the embedder stands so far)."""
