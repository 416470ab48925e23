"""The validated shape of a generate request, shared by the web layer, the job service and the CLI."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)  # slots: 50,000 of them in an accept
class LotInput:
    lot_id: str
    additional_info: str
    image_urls: list[str]
    webhook: str | None = None


@dataclass(frozen=True)
class GenerateRequest:
    version: str
    languages: list[str]
    lots: list[LotInput]

    @property
    def is_batch(self) -> bool:
        return len(self.lots) > 1
