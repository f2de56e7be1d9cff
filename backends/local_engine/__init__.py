"""The bundled inference engine: Hugging Face Llama / Qwen2 / Mistral checkpoints served with a paged
KV cache, prefix caching and continuous batching, behind an OpenAI-compatible server.

Stands alone (nothing from `gateway`). The public surface:

    engine = LLMEngine(EngineSettings(model="/models/Qwen2.5-0.5B-Instruct"))
    engine.add_request("r1", engine.tokenizer.encode("Hello"), SamplingParams(max_tokens=16))
    while engine.has_unfinished():
        for delta in engine.step(): ...

`python -m backends.local_engine serve --model DIR` runs the HTTP server.
"""

from backends.local_engine.engine import Delta, EngineSettings, LLMEngine
from backends.local_engine.errors import EngineError, InvalidRequest, LoadError
from backends.local_engine.sampling import SamplingParams

__all__ = ["Delta", "EngineError", "EngineSettings", "InvalidRequest", "LLMEngine", "LoadError", "SamplingParams"]
