"""An OpenAI-compatible emulator (Responses, Chat Completions, Files, Batches) for tests and demos."""
from services.sandbox.config import ConfigError, SandboxConfig
from services.sandbox.server import SandboxServer

__all__ = ["ConfigError", "SandboxConfig", "SandboxServer"]
