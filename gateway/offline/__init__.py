"""Offline tools, apart from the request path: router training and evaluation, cache evaluation,
and the embedder's ONNX export (run once, at the first start that needs it)."""
