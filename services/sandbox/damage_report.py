"""Plausible, deterministic answers to the service's structured damage-report schema.

Recognised by its shape (a ``findings`` array of objects with ``part`` and ``photos``), and
filled from the schema's own vocabularies, so it follows the schema as the service changes it.
Cars whose URLs or notes carry a no-damage marker, and about one in six others, have no damage;
cars with fewer than four photos have views missing.
"""
from __future__ import annotations

import random
from typing import Any, Mapping

from services.sandbox.html_text import NO_DAMAGE_MARKERS
from services.sandbox.schema_fill import seed_from

NOTES = {
    "scratch": "Paint scratches along the surface.",
    "dent": "A dent with the paint intact.",
    "crack": "A crack across the component.",
    "broken": "The component is broken.",
    "missing": "The component is missing.",
    "rust": "Surface rust is visible.",
    "paint": "Paint is faded and peeling.",
    "deformation": "The panel is pushed in and deformed.",
    "glass": "Chipped and cracked glass.",
    "other": "Damage of another kind.",
}
SIDELESS = {"front_bumper": "front", "rear_bumper": "rear", "hood": "front", "roof": "center", "trunk_lid": "rear",
            "tailgate": "rear", "windshield": "front", "rear_window": "rear", "grille": "front", "sunroof": "center",
            "engine_bay": "front", "undercarriage": "center", "license_plate": "rear", "dashboard": "center",
            "steering_wheel": "center", "airbag": "center", "seat": "center", "interior_trim": "center"}
AUCTION = {"front": "front_end", "rear": "rear_end", "left": "left_side", "right": "right_side", "center": "roof"}


def is_damage_report(schema: Mapping[str, Any] | None) -> bool:
    try:
        item = schema["properties"]["findings"]["items"]["properties"]
        return "part" in item and "photos" in item
    except (KeyError, TypeError):
        return False


def _enum(schema: Mapping[str, Any]) -> list[str]:
    if "enum" in schema:
        return [v for v in schema["enum"] if v is not None]
    for option in schema.get("anyOf", []):
        if "enum" in option:
            return [v for v in option["enum"] if v is not None]
    return []


def damage_report(schema: Mapping[str, Any], image_urls: list[str], notes: str) -> dict[str, Any]:
    props = schema["properties"]
    item = props["findings"]["items"]["properties"]
    rng = random.Random(seed_from("report", image_urls, notes))
    marked = any(m in text.lower() for m in NO_DAMAGE_MARKERS for text in [*image_urls, notes])
    count = 0 if marked else rng.choices((0, 1, 2, 3), weights=(1, 2, 2, 1))[0]
    parts = [p for p in _enum(item["part"]) if p != "other"]
    findings = []
    for part in rng.sample(parts, min(count, len(parts))):
        side = SIDELESS.get(part) or rng.choice(["left", "right"])
        damage = rng.choice([d for d in _enum(item["damage_type"]) if d != "other"] or ["other"])
        photos = sorted(rng.sample(range(1, len(image_urls) + 1), min(len(image_urls), rng.randint(1, 2))))
        findings.append({"part": part, "side": side, "damage_type": damage,
                         "severity": rng.choice(_enum(item["severity"])), "photos": photos,
                         "note": NOTES.get(damage, "Visible damage.")})
    views = _enum(props["coverage"]["properties"]["views_present"]["items"])
    exterior = [v for v in ("front", "rear", "left", "right") if v in views]
    present = exterior[:min(len(image_urls), len(exterior))]
    if len(image_urls) > len(exterior) and "interior" in views:
        present.append("interior")
    sides = [AUCTION.get(f["side"], "unknown") for f in findings]
    primary = sides[0] if sides else "none"
    secondary = next((s for s in sides[1:] if s != primary), None)
    return {"findings": findings, "no_visible_damage": not findings, "primary_damage": primary,
            "secondary_damage": secondary,
            "coverage": {"views_present": present, "views_missing": [v for v in views if v not in present]}}
