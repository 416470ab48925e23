"""One lot from photos to descriptions: image checks, vision in English, translations in parallel.

Used as is by the synchronous endpoint and by the direct batch strategy.
"""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from services.errors import ServiceError
from services.findings import lot_fields
from services.images import ImageChecker, ImageCheckResult, required_images
from services.openai_client import OpenAIGateway, Usage

log = logging.getLogger(__name__)


def is_english(code: str) -> bool:
    return code == "en" or code.startswith("en-")


@dataclass
class LotDescription:
    lot_id: str
    processed_images: int
    missing_images: list[str]
    english: str
    descriptions: dict[str, str]
    report: dict[str, Any] = field(default_factory=dict)
    usage: Usage = field(default_factory=Usage)

    def as_dict(self, languages: list[str]) -> dict[str, Any]:
        return {
            "lot_id": self.lot_id,
            "status": "completed",
            "processed_images": self.processed_images,
            "descriptions": [{"language": code, "damages": self.descriptions[code]} for code in languages],
            "missing_images": self.missing_images,
            **lot_fields(self.report),
            "usage": self.usage.as_dict(),
        }


class Generator:
    """Describes lots; translation calls for all languages run at once, so latency does not grow with them."""

    def __init__(self, images: ImageChecker, ai: OpenAIGateway, min_ratio: float = 0.5, translation_workers: int = 32):
        self.images = images
        self.ai = ai
        self.min_ratio = min_ratio
        self._pool = ThreadPoolExecutor(max_workers=translation_workers, thread_name_prefix="translate")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def check_images(self, image_urls: list[str]) -> ImageCheckResult:
        result = self.images.check_many(image_urls)
        needed = required_images(len(image_urls), self.min_ratio)
        if len(result.valid_urls) < needed:
            raise ServiceError(422, "NOT_ENOUGH_IMAGES",
                               f"Only {len(result.valid_urls)} of {len(image_urls)} images are usable; at least {needed} required",
                               {"missing_images": result.missing_urls, "usable_images": len(result.valid_urls),
                                "required_images": needed,
                                "reasons": {c.url: c.reason for c in result.checks if not c.ok}})
        return result

    def translate(self, english: str, languages: list[str]) -> tuple[dict[str, str], Usage]:
        """English as written, every other language through its own concurrent call.

        When a call fails, the error carries (as ``spent``) what the calls that did answer cost."""
        texts = {code: english for code in languages if is_english(code)}
        others = [code for code in languages if not is_english(code)]
        usage = Usage()
        futures = {code: self._pool.submit(self.ai.translate, english, [code]) for code in others}
        failure: ServiceError | None = None
        for code, future in futures.items():
            try:
                result = future.result()
            except ServiceError as exc:
                failure = failure or exc
                usage.add(getattr(exc, "usage", None) or Usage())  # an unusable answer was still billed
                continue
            texts[code] = result.texts[code]
            usage.add(result.usage)
        if failure is not None:
            failure.spent = usage
            raise failure
        return texts, usage

    def describe(self, lot_id: str, image_urls: list[str], additional_info: str, languages: list[str],
                 checked: ImageCheckResult | None = None) -> LotDescription:
        """One lot described; a failure after a paid answer carries what was spent as ``error.spent``."""
        checked = checked or self.check_images(image_urls)
        sent = [index for index, check in enumerate(checked.checks) if check.ok]
        try:
            vision = self.ai.describe(checked.valid_urls, additional_info, sent)
        except ServiceError as exc:
            exc.spent = getattr(exc, "usage", None) or Usage()
            raise
        try:
            texts, usage = self.translate(vision.html, languages)
        except ServiceError as exc:
            exc.spent.add(vision.usage)
            raise
        usage.add(vision.usage)
        return LotDescription(lot_id=lot_id, processed_images=len(checked.valid_urls),
                              missing_images=checked.missing_urls, english=vision.html,
                              descriptions=texts, report=vision.report, usage=usage)
