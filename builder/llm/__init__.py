"""The builder's LLMs: any OpenAI-compatible endpoint (``client``), or the embedded llama.cpp server with a GGUF
model from PyPI (``local_server``) when none is configured."""

from .client import LLMClient, LLMConfig, LLMUsage, Message, ResponseCache, StructuredOutput
from .local_server import EMBEDDED_MODELS, EmbeddedModel, LocalLLMServer, embedded_model, llm_endpoint

__all__ = [
    "EMBEDDED_MODELS",
    "EmbeddedModel",
    "LLMClient",
    "LLMConfig",
    "LLMUsage",
    "LocalLLMServer",
    "Message",
    "ResponseCache",
    "StructuredOutput",
    "embedded_model",
    "llm_endpoint",
]
