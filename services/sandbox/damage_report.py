"""Plausible, deterministic answers to the service's structured damage-report schema.

Recognised by its shape (a ``findings`` array of objects with ``part`` and ``photos``), and
filled from the schema's own vocabularies, so it follows the schema as the service changes it.
The answer reads like an inspector's for a demo:

* each photo shows the views its URL path names (``bmw-front.jpg`` the front, ``front-left.jpg``
  both, ``engine.jpg`` the engine bay); photos named for no view show, in turn, the views no other
  photo names; every view no photo shows is listed missing;
* the damage follows the seller's notes: "front collision" on front parts, "rear" on rear parts,
  "hail" dents on the roof, hood and trunk lid, "flood" in the cabin, "no damage" none; notes that
  name nothing get one to three random findings (about one car in six none);
* each finding cites only photos of the view its part is seen from (``services.findings.view_of``,
  the map the service checks answers against), so a demo answer never needs repairing.

The same photos and notes always give the same answer.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any, Mapping
from urllib.parse import urlsplit

from services.findings import AREA_VIEWS, view_of
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
EXTERIOR = ("front", "rear", "left", "right")
OVERHEAD = "overhead"
# Words of a photo's URL path and the view they name; a cabin, gauge or engine word wins over an
# exterior one ("front-seats.jpg" is a cabin photo). Roof words name an exterior photo of no listed view.
INNER_WORDS = {"interior": "interior", "inside": "interior", "cabin": "interior", "seat": "interior",
               "seats": "interior", "dash": "interior", "dashboard": "interior", "odometer": "odometer",
               "odo": "odometer", "mileage": "odometer", "cluster": "odometer", "engine": "engine_bay",
               "motor": "engine_bay"}
OUTER_WORDS = {"front": "front", "hood": "front", "grille": "front", "rear": "rear", "trunk": "rear",
               "left": "left", "driver": "left", "right": "right", "passenger": "right", "roof": OVERHEAD,
               "top": OVERHEAD}

LR = ("left", "right")
PANEL = ("dent", "deformation", "scratch", "paint", "rust")
GLASS = ("crack", "glass", "broken")
LAMP = ("crack", "broken", "missing")
# The kinds of damage each part can plausibly show; a theme's kinds are narrowed to these.
LOOKS = {
    "front_bumper": ("deformation", "crack", "broken", "scratch"), "rear_bumper": ("deformation", "crack", "broken",
                                                                                  "scratch"),
    "hood": PANEL, "roof": PANEL, "trunk_lid": PANEL, "tailgate": PANEL, "front_fender": PANEL,
    "rear_quarter_panel": PANEL, "front_door": PANEL, "rear_door": PANEL, "rocker_panel": ("rust", "dent", "scratch"),
    "grille": ("broken", "crack", "missing"), "headlight": LAMP, "taillight": LAMP, "fog_light": LAMP,
    "mirror": ("broken", "scratch", "missing"), "windshield": GLASS, "rear_window": GLASS, "side_window": GLASS,
    "wheel": ("scratch",), "undercarriage": ("rust",), "seat": ("other",), "dashboard": ("other", "crack"),
    "interior_trim": ("other", "broken"), "airbag": ("broken",),
}
IMPACT = ("deformation", "broken", "crack", "dent")
SIDE_HIT = ("dent", "deformation", "scratch", "broken")
MOST = 4


@dataclass(frozen=True)
class Theme:
    """Damage a kind of note describes: the parts (with the sides they may be on) and how they look."""
    words: str
    area: str | None  # the auction area; None: the area of the view each finding is seen from
    parts: tuple[tuple[str, tuple[str, ...]], ...]
    damage: tuple[str, ...]
    severity: tuple[str, ...]
    note: str | None = None
    fallback: tuple[tuple[str, tuple[str, ...]], ...] = ()  # parts used when no photo shows the others


THEMES = (
    Theme(r"front|head[- ]on|frontal", None,
          (("front_bumper", ("front",)), ("hood", ("front",)), ("headlight", ("front",)), ("grille", ("front",)),
           ("windshield", ("front",))), IMPACT, ("moderate", "severe"), fallback=(("front_fender", LR),)),
    Theme(r"rear|rear[- ]ended", None,
          (("rear_bumper", ("rear",)), ("trunk_lid", ("rear",)), ("taillight", ("rear",)),
           ("rear_window", ("rear",))), IMPACT, ("moderate", "severe"), fallback=(("rear_quarter_panel", LR),)),
    Theme(r"left|driver", None,
          (("front_door", ("left",)), ("rear_door", ("left",)), ("front_fender", ("left",)),
           ("rear_quarter_panel", ("left",)), ("mirror", ("left",)), ("rocker_panel", ("left",))),
          SIDE_HIT, ("minor", "moderate", "severe")),
    Theme(r"right|passenger", None,
          (("front_door", ("right",)), ("rear_door", ("right",)), ("front_fender", ("right",)),
           ("rear_quarter_panel", ("right",)), ("mirror", ("right",)), ("rocker_panel", ("right",))),
          SIDE_HIT, ("minor", "moderate", "severe")),
    Theme(r"side|doors?|t[- ]?bone[ds]?", None,
          (("front_door", LR), ("rear_door", LR), ("rocker_panel", LR), ("mirror", LR)),
          SIDE_HIT, ("moderate", "severe")),
    Theme(r"hail", "hail", (("roof", ("center",)), ("hood", ("front",)), ("trunk_lid", ("rear",))),
          ("dent",), ("minor", "moderate"), "Many small hail dents across the panel."),
    Theme(r"flood(ed)?|water damage|submerged", "water_flood",
          (("seat", ("center",)), ("interior_trim", ("center",)), ("dashboard", ("center",)),
           ("undercarriage", ("center",))), ("other", "rust"), ("moderate", "severe"),
          "Water marks and staining from flooding."),
    Theme(r"airbags?", None, (("airbag", ("center",)),), ("broken",), ("severe",), "The airbag has deployed."),
)
# Notes that name no damage get random findings on these.
ANY_DAMAGE = (
    ("front_bumper", ("front",)), ("rear_bumper", ("rear",)), ("hood", ("front",)), ("roof", ("center",)),
    ("trunk_lid", ("rear",)), ("front_fender", LR), ("rear_quarter_panel", LR), ("front_door", LR),
    ("rear_door", LR), ("rocker_panel", LR), ("mirror", LR), ("wheel", LR), ("windshield", ("front",)),
    ("rear_window", ("rear",)), ("headlight", ("front",)), ("taillight", ("rear",)),
)
NEGATION = re.compile(r"\b(no|not|without|never|none)\b")
NO_DAMAGE = re.compile(r"\bno[-_ ]?(visible |known )?damage\b|\bundamaged\b|\bdamage[- ]free\b")
MINOR = re.compile(r"\b(minor|light|slight|small)\b")
SEVERE = re.compile(r"\b(severe|heavy|major|total(led)?)\b")
CLAUSE = re.compile(r"[,.;:!?\n]|\bbut\b")
# each theme's words as a whole-word pattern, compiled once (building them per clause was most of a batch line)
THEME_PATTERNS = tuple((order, theme, re.compile(rf"\b(?:{theme.words})\b")) for order, theme in enumerate(THEMES))
PATH_WORDS = re.compile(r"[a-z]+")


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


def photo_views(image_urls: list[str], views: list[str]) -> list[set[str]]:
    """The views each photo shows: those its URL path names, else the next view no photo names."""
    named = [_named_views(url) for url in image_urls]
    unclaimed = [v for v in (*EXTERIOR, "interior") if v in views and not any(v in n for n in named)]
    cycle = [v for v in EXTERIOR if v in views] or list(views)
    shown, spare = [], 0
    for names in named:
        if names:
            shown.append(names)
        elif unclaimed:
            shown.append({unclaimed.pop(0)})
        elif cycle:
            shown.append({cycle[spare % len(cycle)]})
            spare += 1
        else:
            shown.append(set())
    return [{v for v in s if v in views or v == OVERHEAD} for s in shown]


def _named_views(url: str) -> set[str]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return set()
    words = PATH_WORDS.findall(parts.path.lower())
    inner = {INNER_WORDS[w] for w in words if w in INNER_WORDS}
    return inner or {OUTER_WORDS[w] for w in words if w in OUTER_WORDS}


def _reading(notes: str) -> tuple[list[Theme], bool, tuple[str, ...] | None]:
    """The themes the notes name (in the order named), whether they say "no damage", a severity they imply.

    A clause with a negation names no theme, so "no damage to the rear" is not rear damage.
    """
    text = notes.lower()
    found: list[tuple[int, int, Theme]] = []
    start = 0
    for separator in [*CLAUSE.finditer(text), None]:
        end = separator.start() if separator else len(text)
        clause = text[start:end]
        if not NEGATION.search(clause):
            for order, theme, pattern in THEME_PATTERNS:
                match = pattern.search(clause)
                if match:
                    found.append((start + match.start(), order, theme))
        start = separator.end() if separator else end
    themes = [theme for _, _, theme in sorted(found, key=lambda f: (f[0], f[1]))]
    severity = ("minor",) if MINOR.search(text) else ("severe",) if SEVERE.search(text) else None
    return themes, bool(NO_DAMAGE.search(text)), severity


def damage_report(schema: Mapping[str, Any], image_urls: list[str], notes: str) -> dict[str, Any]:
    props = schema["properties"]
    views = _enum(props["coverage"]["properties"]["views_present"]["items"])
    shown = photo_views(image_urls, views)
    inspector = _Inspector(props["findings"]["items"]["properties"], shown,
                           random.Random(seed_from("report", image_urls, notes)))
    themes, says_none, severity = _reading(notes)
    if any(m in url.lower() for m in NO_DAMAGE_MARKERS for url in image_urls) or (says_none and not themes):
        pass
    elif themes:
        for theme in themes:
            inspector.theme(theme, severity)
    else:
        inspector.anything()
    areas = set(_enum(props["primary_damage"]))
    known = [a if a in areas else "unknown" for a in inspector.areas]
    primary = known[0] if known else "none"
    present = [v for v in views if any(v in s for s in shown)]
    return {"findings": inspector.findings, "no_visible_damage": not inspector.findings, "primary_damage": primary,
            "secondary_damage": next((a for a in known[1:] if a != primary), None),
            "coverage": {"views_present": present, "views_missing": [v for v in views if v not in present]}}


class _Inspector:
    """Writes findings that the photos can show: each cites only photos of the view its part is seen from."""

    def __init__(self, item: Mapping[str, Any], shown: list[set[str]], rng: random.Random):
        self.parts = set(_enum(item["part"]))
        self.sides = set(_enum(item["side"]))
        self.kinds = set(_enum(item["damage_type"]))
        self.severities = _enum(item["severity"])
        self.shown = shown
        self.rng = rng
        self.findings: list[dict[str, Any]] = []
        self.areas: list[str] = []

    def theme(self, theme: Theme, severity: tuple[str, ...] | None) -> None:
        wanted = self.rng.randint(2, 3) if len(theme.parts) > 2 else len(theme.parts)
        added = 0
        for part, sides in self.rng.sample(theme.parts, len(theme.parts)):
            if added < wanted:
                added += self.add(part, sides, theme.damage, severity or theme.severity, theme.note, theme.area)
        for part, sides in theme.fallback:
            if not added:
                added += self.add(part, sides, theme.damage, severity or theme.severity, theme.note, theme.area)

    def anything(self) -> None:
        count = self.rng.choices((0, 1, 2, 3), weights=(1, 2, 2, 1))[0]
        for part, sides in self.rng.sample(ANY_DAMAGE, len(ANY_DAMAGE)):
            if len(self.findings) < count:
                self.add(part, sides, LOOKS[part], tuple(self.severities), None, None)

    def add(self, part: str, sides: tuple[str, ...], damage: tuple[str, ...], severities: tuple[str, ...],
            note: str | None, area: str | None) -> bool:
        """One finding on this part, if a photo shows it and it is not reported yet; whether it was added."""
        options = [(side, photos) for side in sides if side in self.sides
                   for photos in [_photos_of(view_of(part, side), self.shown)] if photos]
        looks = LOOKS.get(part, damage)
        kinds = [d for d in damage if d in looks and d in self.kinds] or [d for d in looks if d in self.kinds]
        if len(self.findings) >= MOST or part not in self.parts or not options or not kinds \
                or any(f["part"] == part for f in self.findings):
            return False
        side, photos = self.rng.choice(options)
        kind = self.rng.choice(kinds)
        cited = sorted(self.rng.sample(photos, min(len(photos), self.rng.randint(1, 2))))
        level = [s for s in severities if s in self.severities] or self.severities
        self.findings.append({"part": part, "side": side, "damage_type": kind, "severity": self.rng.choice(level),
                              "photos": cited, "note": note or NOTES.get(kind, "Visible damage.")})
        self.areas.append(area or _area(part, side))
        return True


def _photos_of(view: str | None, shown: list[set[str]]) -> list[int]:
    """Photo numbers (from 1) that show a view; for a part of no single view, every outside photo."""
    if view is None:
        return [n for n, s in enumerate(shown, start=1) if s & {*EXTERIOR, OVERHEAD}]
    return [n for n, s in enumerate(shown, start=1) if view in s]


def _area(part: str, side: str) -> str:
    areas = {view: area for area, view in AREA_VIEWS.items()}
    view = view_of(part, side)
    if view is None:
        return "undercarriage" if part == "undercarriage" else "roof"
    return areas.get(view, "unknown")
