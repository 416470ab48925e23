"""Lot files in and result files out, for ``genservice submit``/``estimate``/``results``.

Input: a JSON request body, a list of lots, ``{"lots": [...]}``, or a CSV file with the columns
``lot_id``, ``image_urls`` and optionally ``additional_info`` and ``webhook``. Output: the answer as
JSON, or a CSV file with one row per lot and language (:data:`CSV_COLUMNS`).
"""
from __future__ import annotations

import csv
import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence, TextIO

CSV_COLUMNS = ("lot_id", "status", "language", "damages", "missing_images", "error", "primary_damage",
               "secondary_damage", "no_visible_damage", "findings", "views_missing")


class UsageError(Exception):
    """Bad arguments or input: reported without a trace, exit code 2."""


# ---- input --------------------------------------------------------------------------------------

@dataclass
class LoadedRequest:
    lots: list[dict[str, Any]]
    languages: list[str] | None = None
    version: str | None = None


def load_request(path: str) -> LoadedRequest:
    """Lots from a JSON file (request body, list of lots, or {"lots": [...]}) or a CSV file; "-" is stdin."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    if path.lower().endswith(".csv"):
        return LoadedRequest(lots_from_csv(text, path))
    return request_from_json(text, path)


def request_from_json(text: str, source: str) -> LoadedRequest:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{source} is not valid JSON: {exc}") from None
    if isinstance(data, list):
        data = {"lots": data}
    if not isinstance(data, dict) or not isinstance(data.get("lots"), list) or not data["lots"]:
        raise UsageError(f"{source} must hold a non-empty list of lots, or an object with one under \"lots\"")
    if not all(isinstance(item, dict) for item in data["lots"]):
        raise UsageError(f"{source}: every lot must be an object with lot_id and images")
    languages = data.get("languages")
    if languages is not None and not (isinstance(languages, list) and all(isinstance(x, str) for x in languages)):
        raise UsageError(f"{source}: \"languages\" must be a list of language codes")
    version = data.get("version")
    return LoadedRequest(data["lots"], languages, version if isinstance(version, str) else None)


def lots_from_csv(text: str, source: str) -> list[dict[str, Any]]:
    """Columns lot_id, image_urls (separated by spaces or |), and optionally additional_info, webhook."""
    reader = csv.DictReader(io.StringIO(text))
    columns = {name.strip() for name in reader.fieldnames or ()}
    missing = {"lot_id", "image_urls"} - columns
    if missing:
        raise UsageError(f"{source} lacks the column(s) {', '.join(sorted(missing))}")
    lots = []
    for number, row in enumerate(reader, start=2):
        row = {(k or "").strip(): (v or "").strip() for k, v in row.items() if k}
        if not any(row.values()):
            continue
        if not row.get("lot_id"):
            raise UsageError(f"{source} line {number}: lot_id is empty")
        urls = row.get("image_urls", "").replace("|", " ").split()
        lot: dict[str, Any] = {"lot_id": row["lot_id"], "additional_info": row.get("additional_info", ""),
                               "images": [{"url": url} for url in urls]}
        if row.get("webhook"):
            lot["webhook"] = row["webhook"]
        lots.append(lot)
    if not lots:
        raise UsageError(f"{source} has no lots")
    return lots


def parse_languages(value: str | None) -> list[str] | None:
    if value is None:
        return None
    languages = [code.strip() for code in value.split(",") if code.strip()]
    if not languages:
        raise UsageError("--languages needs at least one code, e.g. en,ru")
    return languages


# ---- output -------------------------------------------------------------------------------------

def print_json(data: Any, stream: TextIO | None = None) -> None:
    stream = stream or sys.stdout
    json.dump(data, stream, ensure_ascii=False, indent=2)
    stream.write("\n")


def result_lots(answer: dict[str, Any]) -> list[dict[str, Any]]:
    """The lots of a sync answer or of a batch results document."""
    if isinstance(answer.get("results"), dict):
        return answer["results"].get("lots") or []
    return answer.get("lots") or []


def findings_columns(lot: dict[str, Any]) -> dict[str, str]:
    """The structured findings flattened for a spreadsheet: one ``side part: severity damage [photos]`` per finding."""
    if "findings" not in lot:
        return {}
    findings = "; ".join(
        f"{f.get('side', '')} {f.get('part', '')}: {f.get('severity', '')} {f.get('damage_type', '')} "
        f"[{' '.join(str(p) for p in f.get('photos') or [])}]" for f in lot.get("findings") or [])
    return {"primary_damage": lot.get("primary_damage") or "", "secondary_damage": lot.get("secondary_damage") or "",
            "no_visible_damage": str(bool(lot.get("no_visible_damage"))).lower(), "findings": findings,
            "views_missing": " ".join((lot.get("coverage") or {}).get("views_missing") or [])}


def csv_rows(lots: Sequence[dict[str, Any]], languages: Sequence[str]) -> list[dict[str, str]]:
    """One row per lot and language; a lot without descriptions gets a row per requested language."""
    rows = []
    for lot in lots:
        common = {"lot_id": lot.get("lot_id", ""), "status": lot.get("status", ""),
                  "missing_images": " ".join(lot.get("missing_images") or []), "error": lot.get("error") or "",
                  **findings_columns(lot)}
        descriptions = lot.get("descriptions") or [{"language": code, "damages": ""} for code in languages or [""]]
        for item in descriptions:
            rows.append({**common, "language": item.get("language", ""), "damages": item.get("damages", "")})
    return rows


def write_results(answer: dict[str, Any], path: str, languages: Sequence[str]) -> int:
    """Write a sync answer or batch results as JSON or CSV (by extension); return the number of lots."""
    lots = result_lots(answer)
    with open(path, "w", encoding="utf-8", newline="") as fh:
        if path.lower().endswith(".csv"):
            writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
            writer.writeheader()
            writer.writerows(csv_rows(lots, languages))
        else:
            print_json(answer, fh)
    return len(lots)
