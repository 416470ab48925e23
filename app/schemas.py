"""Request bodies: parsed once, checked field by field, turned into plain dataclasses.

Errors follow the spec's table: 400 for a malformed body or field, 409 for a repeated
lot_id, 413 for too many lots, 422 for image URLs and language codes that cannot be used.
"""
from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from services.errors import ServiceError
from services.languages import normalize_language
from services.lots import GenerateRequest, LotInput

MAX_LOT_ID = 128
MAX_ADDITIONAL_INFO = 10_000
MAX_URL = 2048


def bad_request(message: str, field: str | None = None, code: str = "VALIDATION_ERROR") -> ServiceError:
    return ServiceError(400, code, message, {"field": field} if field else None)


def require_object(body: Any) -> dict:
    if not isinstance(body, dict):
        raise ServiceError(400, "INVALID_JSON", "Request body must be a JSON object", error="Invalid request format")
    return body


def batch_size_exceeded(provided: int, max_batch_size: int) -> ServiceError:
    """413 for too many lots; the body parser stops counting at max + 1, so ``provided`` is at most that."""
    return ServiceError(413, "BATCH_SIZE_EXCEEDED", f"Batch size exceeds maximum limit of {max_batch_size:,} lots",
                        {"provided_lots": provided, "max_allowed": max_batch_size})


def require_lots_list(body: dict) -> list:
    if "lots" not in body:
        raise bad_request("Field 'lots' is required", "lots", "MISSING_FIELD")
    lots = body["lots"]
    if not isinstance(lots, list) or not lots:
        raise bad_request("Field 'lots' must be a non-empty array", "lots")
    return lots


_WHITESPACE = re.compile(r"\s")
_PLAIN_HTTP_URL = re.compile(r"(?i:https?)://[A-Za-z0-9.-]+(?::\d{1,5})?(?:[/?#]\S*)?\Z")


def is_http_url(url: Any) -> bool:
    """An absolute http(s) URL with a host and no white space.

    It runs for every photo of up to 50,000 lots, so the common plain form is matched by one
    compiled pattern and only the rest goes through urlsplit.
    """
    if not isinstance(url, str) or not url or len(url) > MAX_URL:
        return False
    if _PLAIN_HTTP_URL.match(url):
        return True  # the pattern admits no white space, so the search below is only for the rest
    if _WHITESPACE.search(url):
        return False
    try:
        parts = urlsplit(url)
        return parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        return False


def parse_languages(value: Any, max_languages: int) -> list[str]:
    if value is None:
        return ["en"]
    if not isinstance(value, list) or not value:
        raise bad_request("Field 'languages' must be a non-empty array of language codes", "languages")
    if len(value) > max_languages:
        raise bad_request(f"At most {max_languages} languages per request, got {len(value)}", "languages",
                          "TOO_MANY_LANGUAGES")
    languages: list[str] = []
    unsupported = []
    for code in value:
        normalized = normalize_language(code)
        if normalized is None:
            unsupported.append(code)
        elif normalized not in languages:
            languages.append(normalized)
    if unsupported:
        raise ServiceError(422, "UNSUPPORTED_LANGUAGE", "Unsupported language codes (use ISO 639-1, e.g. en, ru, pt-BR)",
                           {"unsupported_languages": unsupported})
    return languages


def _image_url(item: Any) -> Any:
    if isinstance(item, dict):
        return item.get("url")
    return item


def parse_lot(index: int, raw: Any, max_images: int, invalid_urls: list) -> LotInput:
    where = f"lots[{index}]"
    if not isinstance(raw, dict):
        raise bad_request(f"{where} must be an object", where)
    lot_id = raw.get("lot_id")
    if not isinstance(lot_id, str) or not lot_id.strip():
        raise bad_request(f"{where}.lot_id must be a non-empty string", f"{where}.lot_id",
                          "MISSING_FIELD" if lot_id is None else "VALIDATION_ERROR")
    if len(lot_id) > MAX_LOT_ID:
        raise bad_request(f"{where}.lot_id must be at most {MAX_LOT_ID} characters", f"{where}.lot_id")
    info = raw.get("additional_info", "")
    if info is None:
        info = ""
    if not isinstance(info, str) or len(info) > MAX_ADDITIONAL_INFO:
        raise bad_request(f"{where}.additional_info must be a string of at most {MAX_ADDITIONAL_INFO} characters",
                          f"{where}.additional_info")
    images = raw.get("images")
    if not isinstance(images, list) or not images:
        raise bad_request(f"{where}.images must be a non-empty array of {{\"url\": ...}} objects", f"{where}.images",
                          "MISSING_FIELD" if images is None else "VALIDATION_ERROR")
    if len(images) > max_images:
        raise ServiceError(422, "TOO_MANY_IMAGES", f"{where} has {len(images)} images; at most {max_images} allowed",
                           {"lot_id": lot_id, "provided_images": len(images), "max_allowed": max_images})
    urls = []
    for item in images:
        url = _image_url(item)
        if not isinstance(url, str):
            raise bad_request(f"{where}.images entries must be objects with a string 'url'", f"{where}.images")
        if not is_http_url(url):
            invalid_urls.append(url)
        urls.append(url)
    webhook = raw.get("webhook")
    if webhook is not None and webhook != "":
        if not is_http_url(webhook):
            raise ServiceError(422, "INVALID_WEBHOOK_URL", f"{where}.webhook must be an http(s) URL",
                               {"lot_id": lot_id, "webhook": webhook})
    else:
        webhook = None
    return LotInput(lot_id=lot_id, additional_info=info, image_urls=urls, webhook=webhook)


def parse_generate(body: dict, *, max_batch_size: int, max_sync_images: int, max_images_per_lot: int,
                   max_languages: int) -> GenerateRequest:
    """Validate a signed generate-descriptions body (the signature is checked before this)."""
    raw_lots = require_lots_list(body)
    if len(raw_lots) > max_batch_size:
        raise batch_size_exceeded(len(raw_lots), max_batch_size)
    version = body.get("version", "1.0.0")
    if not isinstance(version, str) or len(version) > 32:
        raise bad_request("Field 'version' must be a short string", "version")
    languages = parse_languages(body.get("languages"), max_languages)
    max_images = max_sync_images if len(raw_lots) == 1 else max_images_per_lot
    invalid_urls: list = []
    lots = [parse_lot(i, raw, max_images, invalid_urls) for i, raw in enumerate(raw_lots)]
    if invalid_urls:
        raise ServiceError(422, "INVALID_IMAGE_URLS", "Invalid image URLs detected",
                           {"invalid_urls": invalid_urls[:100], "invalid_count": len(invalid_urls)})
    seen: set[str] = set()
    duplicates = []
    for lot in lots:
        if lot.lot_id in seen:
            duplicates.append(lot.lot_id)
        seen.add(lot.lot_id)
    if duplicates:
        raise ServiceError(409, "DUPLICATE_LOT_ID", "Each lot_id may appear only once per request",
                           {"duplicate_lot_ids": sorted(set(duplicates))[:100]})
    return GenerateRequest(version=version, languages=languages, lots=lots)


def parse_url_list(body: dict, max_urls: int) -> list[str]:
    urls = body.get("urls")
    if not isinstance(urls, list) or not urls or not all(isinstance(u, str) for u in urls):
        raise bad_request("Field 'urls' must be a non-empty array of strings", "urls")
    if len(urls) > max_urls:
        raise bad_request(f"At most {max_urls} URLs per request", "urls")
    invalid = [u for u in urls if not is_http_url(u)]
    if invalid:
        raise ServiceError(422, "INVALID_IMAGE_URLS", "Invalid image URLs detected", {"invalid_urls": invalid})
    return urls
