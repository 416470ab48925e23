"""What the models are asked, in one place, so sync calls and batch lines send the same requests.

Each builder returns the keyword arguments of ``client.responses.create``; the batch JSONL
uses the same dict as the request body.
"""
from __future__ import annotations

from typing import Any

from services.findings import report_schema
from services.languages import language_name
from services.models import ModelRules

VISION_INSTRUCTIONS = """\
You are a vehicle damage inspector filling in the damage report of a car auction listing.
You receive numbered photos of one vehicle and, sometimes, notes from the seller.

Rules:
- Report only damage you can actually see in the photos. Do not guess at hidden, mechanical or
  structural damage you cannot see, and never invent damage.
- Dirt, dust, water drops, reflections, glare, shadows and compression artefacts are not damage.
- One finding per damaged area: the part, the side, the kind of damage, its severity (minor,
  moderate, severe), the numbers of the photos where it is visible (photo 1 is the first photo),
  and one short factual English sentence.
- Sides are as seen from the driver's seat: left is the driver's left. Use front, rear or center
  for parts that are not on one side (hood, roof, bumpers, windshield).
- The seller's notes are context, not fact: report a claimed damage only if a photo shows it.
- If nothing is visible, return no findings and set no_visible_damage to true.
- primary_damage and secondary_damage summarise the findings in auction terms (front_end, rear_end,
  left_side, right_side, all_over, hail, minor_dents_scratches, ...); secondary_damage is null when
  there is none.
- coverage lists which views the photos show (front, rear, left, right, interior, odometer,
  engine_bay) and which are missing.
"""

TRANSLATION_INSTRUCTIONS = """\
You translate the damage section of a car auction listing from English.
Translate the text of the HTML you are given into each requested language and return a JSON object
with one property per language code. Keep the HTML structure exactly: the same tags, in the same
order and nesting, with no attributes added. Translate only the text between tags. Use the usual
automotive terms of each language (body panels, glass, wheels). Do not add, drop or soften anything.
"""


def vision_request(rules: ModelRules, image_urls: list[str], additional_info: str, *, max_tokens: int,
                   reasoning_effort: str | None = "medium", detail: str = "auto") -> dict[str, Any]:
    """The instructions and the schema come first and never change, so OpenAI's prompt cache can serve them."""
    notes = additional_info.strip() or "(none)"
    content: list[dict[str, Any]] = [{
        "type": "input_text",
        "text": f"Seller's notes (context, not fact): {notes}\nNumber of photos: {len(image_urls)}",
    }]
    for number, url in enumerate(image_urls, start=1):
        content.append({"type": "input_text", "text": f"Photo {number}:"})
        content.append({"type": "input_image", "image_url": url, "detail": detail})
    request: dict[str, Any] = {
        "model": rules.name,
        "instructions": VISION_INSTRUCTIONS,
        "input": [{"role": "user", "content": content}],
        "text": {"format": {"type": "json_schema", "name": "damage_report", "strict": True,
                            "schema": report_schema()}},
        "max_output_tokens": rules.output_limit(max_tokens, reasoning_effort),
        "store": False,
    }
    request.update(rules.request_options(reasoning_effort, None))
    return request


def translation_schema(languages: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {code: {"type": "string", "description": f"The HTML in {language_name(code)}"}
                       for code in languages},
        "required": list(languages),
        "additionalProperties": False,
    }


def translation_request(rules: ModelRules, html: str, languages: list[str], *, max_tokens: int,
                        reasoning_effort: str | None, temperature: float | None) -> dict[str, Any]:
    """The target languages travel with the text, so the instructions stay the same for every call."""
    targets = ", ".join(f"{code} ({language_name(code)})" for code in languages)
    request: dict[str, Any] = {
        "model": rules.name,
        "instructions": TRANSLATION_INSTRUCTIONS,
        "input": [{"role": "user", "content": [
            {"type": "input_text", "text": f"Target languages: {targets}."},
            {"type": "input_text", "text": html},
        ]}],
        "text": {"format": {"type": "json_schema", "name": "translations", "strict": True,
                            "schema": translation_schema(languages)}},
        "max_output_tokens": rules.output_limit(max_tokens * max(1, len(languages)), reasoning_effort),
        "store": False,
    }
    request.update(rules.request_options(reasoning_effort, temperature))
    return request
