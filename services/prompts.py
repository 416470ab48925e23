"""What the models are asked, in one place, so sync calls and batch lines send the same requests.

Each builder returns the keyword arguments of ``client.responses.create``; the batch JSONL
uses the same dict as the request body.
"""
from __future__ import annotations

from typing import Any

from services.languages import language_name

VISION_INSTRUCTIONS = """\
You are a vehicle damage inspector writing the damage section of a car auction listing.
You receive photos of one vehicle and, sometimes, notes from the seller.

Rules:
- Describe only damage you can actually see in the photos. Do not guess at hidden,
  mechanical or structural damage you cannot see, and do not invent damage.
- Dirt, dust, water drops, reflections, glare, shadows and compression artefacts are not damage.
- For each damaged area name the panel or part (for example front bumper, hood, left front door,
  windshield, right rear wheel), the kind of damage (scratch, dent, crack, broken, missing, rust,
  paint damage, deformation) and its severity (minor, moderate or severe).
- Left and right are as seen from the driver's seat.
- The seller's notes are context, not fact: mention a claim from them only if the photos confirm it,
  and never repeat a claim the photos contradict.
- If no damage is visible, say so plainly in one sentence.
- If the photos do not show some sides of the vehicle, say which views are missing.
- Write in English, factual and concise, without marketing language, prices or repair advice.

Output format: HTML only, using just these tags: <h3>, <p>, <ul>, <li>, <strong>.
No attributes, no other tags, no Markdown, no code fences. Start with a one-sentence <p> summary,
then a <ul> with one <li> per damaged area, the part name in <strong>.
"""

TRANSLATION_INSTRUCTIONS = """\
You translate the damage section of a car auction listing from English.
Translate the text of the HTML you are given into each requested language and return a JSON object
with one property per language code. Keep the HTML structure exactly: the same tags, in the same
order and nesting, with no attributes added. Translate only the text between tags. Use the usual
automotive terms of each language (body panels, glass, wheels). Do not add, drop or soften anything.
"""


def vision_request(model: str, image_urls: list[str], additional_info: str, *, max_output_tokens: int,
                   reasoning_effort: str | None = "medium", detail: str = "auto") -> dict[str, Any]:
    notes = additional_info.strip() or "(none)"
    content: list[dict[str, Any]] = [{
        "type": "input_text",
        "text": f"Seller's notes (context, not fact): {notes}\nNumber of photos: {len(image_urls)}",
    }]
    content += [{"type": "input_image", "image_url": url, "detail": detail} for url in image_urls]
    request: dict[str, Any] = {
        "model": model,
        "instructions": VISION_INSTRUCTIONS,
        "input": [{"role": "user", "content": content}],
        "max_output_tokens": max_output_tokens,
    }
    if reasoning_effort and is_reasoning_model(model):
        request["reasoning"] = {"effort": reasoning_effort}
    return request


def translation_schema(languages: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {code: {"type": "string", "description": f"The HTML in {language_name(code)}"}
                       for code in languages},
        "required": list(languages),
        "additionalProperties": False,
    }


def translation_request(model: str, html: str, languages: list[str], *, max_output_tokens: int,
                        temperature: float | None) -> dict[str, Any]:
    targets = ", ".join(f"{code} ({language_name(code)})" for code in languages)
    request: dict[str, Any] = {
        "model": model,
        "instructions": TRANSLATION_INSTRUCTIONS + f"\nTarget languages: {targets}.",
        "input": [{"role": "user", "content": [{"type": "input_text", "text": html}]}],
        "text": {"format": {"type": "json_schema", "name": "translations", "strict": True,
                            "schema": translation_schema(languages)}},
        "max_output_tokens": max_output_tokens * max(1, len(languages)),
    }
    if temperature is not None and not is_reasoning_model(model):
        request["temperature"] = temperature
    return request


def is_reasoning_model(model: str) -> bool:
    name = model.lower()
    return name.startswith(("o1", "o3", "o4", "gpt-5"))
