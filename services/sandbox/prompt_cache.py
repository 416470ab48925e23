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
from collections import OrderedDict

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
    """Remembered prefix digests, forgotten ``ttl`` seconds after their last use (at most MAX_PREFIXES)."""

    def __init__(self, ttl: float = 600.0, max_prefixes: int = MAX_PREFIXES):
        self.ttl = ttl
        self._max = max_prefixes
        self._lock = threading.Lock()
        self._seen: OrderedDict[bytes, float] = OrderedDict()

    def cached_tokens(self, model: str, stream: str) -> int:
        """Tokens of ``stream`` served from the cache; the prompt's prefixes are remembered for next time."""
        tokens = len(stream) // CHARS_PER_TOKEN
        if tokens < MIN_TOKENS:
            return 0
        digest = hashlib.sha256(model.encode("utf-8", "surrogatepass") + b"\0")
        boundaries: list[tuple[int, bytes]] = []
        for end in range(STEP_TOKENS, tokens + 1, STEP_TOKENS):
            digest.update(stream[(end - STEP_TOKENS) * CHARS_PER_TOKEN:end * CHARS_PER_TOKEN]
                          .encode("utf-8", "surrogatepass"))
            if end >= MIN_TOKENS:
                boundaries.append((end, digest.copy().digest()))
        now = time.monotonic()
        cached = 0
        with self._lock:
            self._expire(now)
            for end, key in boundaries:
                if key in self._seen:
                    cached = end
                self._seen[key] = now
                self._seen.move_to_end(key)
            while len(self._seen) > self._max:
                self._seen.popitem(last=False)
        return cached

    def clear(self) -> None:
        with self._lock:
            self._seen.clear()

    def _expire(self, now: float) -> None:
        while self._seen:
            key, used = next(iter(self._seen.items()))
            if now - used <= self.ttl:
                break
            del self._seen[key]
