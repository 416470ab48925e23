"""Structured damage findings: the schema the vision model must answer in, its repair, its HTML.

The model answers with findings (part, side, damage type, severity, photos, note) under a strict
JSON schema. Its answer is still untrusted: unknown values, photos that do not exist and
contradictions are repaired or dropped and counted. The English HTML is rendered here from the
findings with one template, so every car's description has the same structure and no model markup.
"""
from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from typing import Any

BY_SIDE = "by_side"
# The photo view each part is seen from: a view name, BY_SIDE for parts seen from the side they are on
# (a left door from the left), or None for parts no single listed view shows (roof, underside).
PART_VIEWS: dict[str, str | None] = {
    "front_bumper": "front", "rear_bumper": "rear", "hood": "front", "roof": None, "trunk_lid": "rear",
    "tailgate": "rear", "front_fender": BY_SIDE, "rear_quarter_panel": BY_SIDE, "front_door": BY_SIDE,
    "rear_door": BY_SIDE, "rocker_panel": BY_SIDE, "pillar": BY_SIDE, "mirror": BY_SIDE, "grille": "front",
    "headlight": "front", "taillight": "rear", "fog_light": "front", "windshield": "front", "rear_window": "rear",
    "side_window": BY_SIDE, "sunroof": None, "wheel": BY_SIDE, "tire": BY_SIDE, "undercarriage": None,
    "engine_bay": "engine_bay", "license_plate": BY_SIDE, "seat": "interior", "dashboard": "interior",
    "steering_wheel": "interior", "airbag": "interior", "interior_trim": "interior", "other": BY_SIDE,
}
SIDE_VIEWS: dict[str, str | None] = {"left": "left", "right": "right", "front": "front", "rear": "rear",
                                     "center": None}
# Auction damage areas that lie on one view (the others, such as hail or all_over, lie on none).
AREA_VIEWS = {"front_end": "front", "rear_end": "rear", "left_side": "left", "right_side": "right",
              "interior": "interior"}
PARTS = tuple(PART_VIEWS)
SIDES = ("left", "right", "front", "rear", "center")
DAMAGE_TYPES = ("scratch", "dent", "crack", "broken", "missing", "rust", "paint", "deformation", "glass", "other")
SEVERITIES = ("minor", "moderate", "severe")
AUCTION_DAMAGE = (
    "none", "front_end", "rear_end", "left_side", "right_side", "side", "roof", "all_over", "hail",
    "minor_dents_scratches", "undercarriage", "interior", "burn", "water_flood", "vandalism", "normal_wear",
    "unknown",
)
VIEWS = ("front", "rear", "left", "right", "interior", "odometer", "engine_bay")
NOTE_MAX = 300


def _enum(values: tuple[str, ...]) -> dict[str, Any]:
    return {"type": "string", "enum": list(values)}


def report_schema() -> dict[str, Any]:
    """The strict JSON schema of the vision answer (Responses API ``text.format``)."""
    finding = {
        "type": "object",
        "properties": {
            "part": _enum(PARTS),
            "side": _enum(SIDES),
            "damage_type": _enum(DAMAGE_TYPES),
            "severity": _enum(SEVERITIES),
            "photos": {"type": "array", "items": {"type": "integer"},
                       "description": "numbers of the photos (1 = first photo) where this damage is visible"},
            "note": {"type": "string", "description": "one short English sentence about this damage"},
        },
        "required": ["part", "side", "damage_type", "severity", "photos", "note"],
        "additionalProperties": False,
    }
    views = {"type": "array", "items": _enum(VIEWS)}
    return {
        "type": "object",
        "properties": {
            "findings": {"type": "array", "items": finding},
            "no_visible_damage": {"type": "boolean"},
            "primary_damage": _enum(AUCTION_DAMAGE),
            "secondary_damage": {"anyOf": [_enum(AUCTION_DAMAGE), {"type": "null"}]},
            "coverage": {"type": "object", "properties": {"views_present": views, "views_missing": views},
                         "required": ["views_present", "views_missing"], "additionalProperties": False},
        },
        "required": ["findings", "no_visible_damage", "primary_damage", "secondary_damage", "coverage"],
        "additionalProperties": False,
    }


@dataclass
class Repairs:
    dropped: int = 0
    fixed: int = 0
    reasons: list[str] = field(default_factory=list)

    def drop(self, reason: str) -> None:
        self.dropped += 1
        self.reasons.append(reason)

    def fix(self, reason: str) -> None:
        self.fixed += 1
        self.reasons.append(reason)


class UnusableReport(ValueError):
    """The whole answer cannot be used (not JSON, not an object, no findings list)."""


def _token(value: Any) -> str:
    return str(value).strip().lower().replace(" ", "_").replace("-", "_") if isinstance(value, str) else ""


def _finding(raw: Any, photo_indexes: list[int], repairs: Repairs) -> dict[str, Any] | None:
    if not isinstance(raw, dict):
        repairs.drop("finding is not an object")
        return None
    part = _token(raw.get("part"))
    if part not in PARTS:
        repairs.drop(f"unknown part {raw.get('part')!r}")
        return None
    severity = _token(raw.get("severity"))
    if severity not in SEVERITIES:
        repairs.drop(f"unknown severity {raw.get('severity')!r}")
        return None
    side = _token(raw.get("side"))
    if side not in SIDES:
        repairs.fix(f"unknown side {raw.get('side')!r}")
        side = "center"
    damage_type = _token(raw.get("damage_type"))
    if damage_type not in DAMAGE_TYPES:
        repairs.fix(f"unknown damage type {raw.get('damage_type')!r}")
        damage_type = "other"
    cited = raw.get("photos") if isinstance(raw.get("photos"), list) else []
    photos = sorted({photo_indexes[n - 1] for n in cited
                     if isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= len(photo_indexes)})
    if len(photos) != len(cited):
        repairs.fix("photo numbers outside the photos sent")
    if not photos:
        repairs.drop("finding cites no existing photo")
        return None
    note = raw.get("note") if isinstance(raw.get("note"), str) else ""
    return {"part": part, "side": side, "damage_type": damage_type, "severity": severity, "photos": photos,
            "note": " ".join(note.split())[:NOTE_MAX]}


def _damage_value(value: Any) -> str | None:
    token = _token(value)
    return token if token in AUCTION_DAMAGE else None


def _views(value: Any) -> list[str]:
    items = value if isinstance(value, list) else []
    named = {_token(v) for v in items}  # once, not once per view
    return [view for view in VIEWS if view in named]


def view_of(part: str, side: str) -> str | None:
    """The photo view a finding on this part and side is seen from (None: no single view shows it)."""
    view = PART_VIEWS.get(part)
    return SIDE_VIEWS.get(side) if view == BY_SIDE else view


def normalize(answer: str | dict, photo_indexes: list[int]) -> tuple[dict[str, Any], Repairs]:
    """Turn the model's answer into a clean report; ``photo_indexes[k]`` is the request index of photo k+1."""
    try:
        data = json.loads(answer) if isinstance(answer, str) else answer
    except ValueError as exc:
        raise UnusableReport(f"answer is not JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("findings"), list):
        raise UnusableReport("answer has no findings list")
    repairs = Repairs()
    findings = [f for f in (_finding(raw, photo_indexes, repairs) for raw in data["findings"]) if f]
    coverage = data.get("coverage") if isinstance(data.get("coverage"), dict) else {}
    present = _shown_by_findings(findings, _views(coverage.get("views_present")), repairs)
    no_damage = not findings
    if data.get("no_visible_damage") is not no_damage:
        repairs.fix("no_visible_damage contradicted the findings")
    primary, secondary = _damage_areas(data, findings, present, repairs)
    missing = [view for view in VIEWS if view not in present]
    report = {"findings": findings, "no_visible_damage": no_damage, "primary_damage": primary,
              "secondary_damage": secondary, "coverage": {"views_present": present, "views_missing": missing}}
    return report, repairs


def _shown_by_findings(findings: list[dict[str, Any]], present: list[str], repairs: Repairs) -> list[str]:
    """``present`` with every view a finding is seen from; one repair per view added.

    A finding reaches this point only if it cites a photo that was really sent, so it is the model
    pointing at evidence: this photo shows this part. The coverage lists are a summary written without
    pointing at anything. When the two disagree, the cited photo is the more trustworthy claim, so the view
    moves from missing to present. Dropping the finding instead would hide damage the buyer needs to know
    about, and keeping both would tell the buyer the damaged side was never photographed.
    """
    shown = set(present)
    for finding in findings:
        view = view_of(finding["part"], finding["side"])
        if view in VIEWS and view not in shown:
            shown.add(view)
            repairs.fix(f"view {view!r} listed missing, yet a finding on the {finding['part']} "
                        f"({finding['side']}) cites photos {finding['photos']}")
    return [view for view in VIEWS if view in shown]


def _damage_areas(data: dict[str, Any], findings: list[dict[str, Any]], present: list[str],
                  repairs: Repairs) -> tuple[str, str | None]:
    """primary_damage and secondary_damage agreeing with the findings and with the repaired coverage.

    An area on a view the photos do not show (rear_end with no rear photo) cannot summarise what the
    photos show; the primary area is then taken from the findings, the secondary one is dropped.
    """
    if not findings:
        return "none", None
    primary = _damage_value(data.get("primary_damage"))
    if primary in (None, "none"):
        repairs.fix("primary_damage missing or 'none' with findings")
        primary = "unknown"
    elif _on_hidden_view(primary, present):
        repairs.fix(f"primary_damage {primary!r} is on a view not shown")
        primary = _area_of(findings)
    secondary = _damage_value(data.get("secondary_damage"))
    if _on_hidden_view(secondary, present):
        repairs.fix(f"secondary_damage {secondary!r} is on a view not shown")
        secondary = None
    if secondary in ("none", primary):
        secondary = None
    return primary, secondary


def _on_hidden_view(area: str | None, present: list[str]) -> bool:
    view = AREA_VIEWS.get(area or "")
    return view is not None and view not in present


def _area_of(findings: list[dict[str, Any]]) -> str:
    """The auction area of the first finding seen from a view that has one, else ``unknown``."""
    areas = {view: area for area, view in AREA_VIEWS.items()}
    for finding in findings:
        area = areas.get(view_of(finding["part"], finding["side"]) or "")
        if area:
            return area
    return "unknown"


def _label(value: str) -> str:
    return value.replace("_", " ")


def render_html(report: dict[str, Any]) -> str:
    """English HTML with exactly one <li> per finding; the structure never depends on the model."""
    findings = report["findings"]
    parts = []
    if not findings:
        parts.append("<p>No visible damage in the photos provided.</p>")
    else:
        count = len(findings)
        summary = f"Visible damage in {count} area{'s' if count != 1 else ''}; primary damage: " \
                  f"{_label(report['primary_damage'])}"
        if report.get("secondary_damage"):
            summary += f", secondary damage: {_label(report['secondary_damage'])}"
        parts.append(f"<p>{html.escape(summary)}.</p>")
        items = []
        for f in findings:
            where = f"{f['side']} {_label(f['part'])}" if f["side"] in ("left", "right") else _label(f["part"])
            text = f"{f['severity']} {_label(f['damage_type'])}"
            note = f" {f['note']}" if f["note"] else ""
            items.append(f"<li><strong>{html.escape(where.capitalize())}</strong>: "
                         f"{html.escape(text)}.{html.escape(note)}</li>")
        parts.append("<ul>" + "".join(items) + "</ul>")
    missing = report["coverage"]["views_missing"]
    if missing:
        parts.append(f"<p>Not shown in the photos: {html.escape(', '.join(_label(v) for v in missing))}.</p>")
    return "".join(parts)


def lot_fields(report: dict[str, Any] | None) -> dict[str, Any]:
    """The fields a lot result gains; empty for a lot without a report (failed, or described before)."""
    if not report:
        return {}
    return {key: report[key] for key in ("findings", "primary_damage", "secondary_damage", "no_visible_damage",
                                         "coverage")}


def photo_indexes(image_urls: list[str], usable: list[str]) -> list[int]:
    """Positions in the request's ``images`` of the photos sent to the model, in the order sent."""
    taken: set[int] = set()
    indexes = []
    for url in usable:
        for i, candidate in enumerate(image_urls):
            if candidate == url and i not in taken:
                taken.add(i)
                indexes.append(i)
                break
    return indexes
