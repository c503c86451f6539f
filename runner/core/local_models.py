"""The names of the models runner runs in its own process, for every layer to read.

A model string `local/<name>` names one of them: a chat model (served by llama.cpp,
`runner.runtime.local_models`) or an embedding model (computed in numpy,
`runner.runtime.embeddings`). `local/<path>.gguf` names a GGUF file instead. The flow
checker reads these names to refuse an unknown one before any run; the runtime holds
what it needs to fetch and run each.
"""

from __future__ import annotations

PREFIX = "local/"
GGUF = ".gguf"

# local/<name> chat models; the runtime pins each one's file (local_models.KNOWN).
CHAT_MODELS = ("smollm2",)

# local/<name> embedding models; the runtime computes each one (embeddings.LOCAL).
EMBEDDING_MODELS = ("minilm",)
