"""Prompt caching as OpenAI reports it, simply and deterministically.

OpenAI caches prompt prefixes of at least 1,024 tokens in steps of 128 and reports the part of
a new prompt that an earlier one (same model, within some minutes) shared as
``cached_tokens``. Here a prompt is laid out as a stream of 4-character tokens (the instructions
field, the output schema, then every input part in order; an image is as many tokens as it
costs), the digest of every 128-token boundary from 1,024 on is remembered, and
``cached_tokens`` is the longest remembered boundary of the new prompt.
"""
from __future__ import annotations

import hashlib
import json
import math
import threading
import time

from services.sandbox.prompt import Prompt

MIN_TOKENS = 1024
STEP_TOKENS = 128
CHARS_PER_TOKEN = 4
MAX_PREFIXES = 200_000


def prompt_stream(prompt: Prompt, image_tokens: list[int]) -> str:
    """The prompt as the cache sees it; ``len(stream) // 4`` is its token count (images included)."""
    parts = [prompt.lead]
    if prompt.schema is not None:
        parts.append(json.dumps(prompt.schema, ensure_ascii=False, separators=(",", ":")))
    images = iter(image_tokens)
    for kind, value in prompt.segments:
        if kind == "image":
            mark = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
            count = next(images) * CHARS_PER_TOKEN
            parts.append((mark * math.ceil(count / len(mark)))[:count])
        else:
            parts.append(value)
    return "".join(_padded(part) for part in parts if part)


def _padded(text: str) -> str:
    return text + "\0" * (-len(text) % CHARS_PER_TOKEN)


class PromptCache:
    """Remembered prefix digests, forgotten ``ttl`` seconds after their last use.

    A plain dict of digest -> last use: an expired entry counts as absent, and when the dict
    outgrows ``max_prefixes`` the least recently used half is dropped in one pass, so each
    lookup stays a couple of dict operations per 128-token step.
    """

    def __init__(self, ttl: float = 600.0, max_prefixes: int = MAX_PREFIXES):
        self.ttl = ttl
        self._max = max_prefixes
        self._lock = threading.Lock()
        self._seen: dict[bytes, float] = {}

    def cached_tokens(self, model: str, stream: str) -> int:
        """Tokens of ``stream`` served from the cache; the prompt's prefixes are remembered for next time."""
        tokens = len(stream) // CHARS_PER_TOKEN
        if tokens < MIN_TOKENS:
            return 0
        # one character per byte when the text is ASCII (the usual case), so the bytes can be cut directly
        data: str | bytes = stream.encode() if stream.isascii() else stream
        digest = hashlib.sha256(model.encode("utf-8", "surrogatepass") + b"\0")
        step = STEP_TOKENS * CHARS_PER_TOKEN
        first = (MIN_TOKENS - STEP_TOKENS) * CHARS_PER_TOKEN
        digest.update(_bytes(data[:first]))
        keys = []
        for start in range(first, tokens * CHARS_PER_TOKEN - step + 1, step):
            digest.update(_bytes(data[start:start + step]))
            keys.append(digest.copy().digest())
        now = time.monotonic()
        cached = 0
        with self._lock:
            seen, ttl = self._seen, self.ttl
            for position, key in enumerate(keys):
                used = seen.get(key)
                if used is not None and now - used <= ttl:
                    cached = MIN_TOKENS + position * STEP_TOKENS
                seen[key] = now
            if len(seen) > self._max:
                self._prune()
        return cached

    def clear(self) -> None:
        with self._lock:
            self._seen.clear()

    def _prune(self) -> None:
        """Keep the most recently used half (caller holds the lock)."""
        keep = sorted(self._seen.items(), key=lambda item: item[1])[len(self._seen) // 2:]
        self._seen = dict(keep)


def _bytes(chunk: str | bytes) -> bytes:
    return chunk if isinstance(chunk, bytes) else chunk.encode("utf-8", "surrogatepass")
