"""HTML the sandbox writes: damage descriptions from a vocabulary, and tag-preserving "translations"."""
from __future__ import annotations

import random
import re

from services.sandbox.schema_fill import seed_from

PARTS = ("front bumper", "rear bumper", "hood", "roof", "trunk lid", "windshield", "rear window",
         "left front door", "right front door", "left rear door", "right rear door", "left front fender",
         "right front fender", "left rear quarter panel", "right rear quarter panel", "left headlight",
         "right headlight", "left taillight", "right taillight", "left side mirror", "right side mirror",
         "left front wheel", "right rear wheel", "grille", "left sill")
DAMAGES = ("scratch", "dent", "crack", "paint damage", "deformation", "rust spot", "scuff", "gouge", "chip")
SEVERITIES = ("minor", "moderate", "severe")
VIEWS = ("front", "rear", "left side", "right side")
NO_DAMAGE_MARKERS = ("no-damage", "no_damage", "nodamage", "undamaged")
UNSAFE_MARKUP = ('<p onclick="alert(\'sandbox\')">Tap to open the full inspection report.</p>'
                 '<script>alert("sandbox-xss")</script>'
                 '<p><a href="javascript:alert(\'sandbox\')">Full report</a></p>')

_TOKEN = re.compile(r"(<!--.*?-->|<[^>]*>)", re.S)
_HTML_TAG = re.compile(r"</?[a-zA-Z][a-zA-Z0-9]*(\s[^<>]*)?/?>")


def damage_html(image_urls: list[str], notes: str, *, unsafe: bool = False) -> str:
    """A damage section in the service's format: a one-sentence <p>, then one <li> per area.

    The findings depend only on the photo URLs and the notes. About one input in six, and
    every input whose URLs or notes contain a marker like ``no-damage``, has no damage.
    """
    rng = random.Random(seed_from("damage", image_urls, notes))
    marked = any(m in text.lower() for m in NO_DAMAGE_MARKERS for text in [*image_urls, notes])
    count = 0 if marked else rng.choices((0, 1, 2, 3), weights=(1, 2, 2, 1))[0]
    if count == 0:
        html = "<p>No visible damage: the photos show no dents, scratches, cracks or paint damage.</p>"
    else:
        html = _findings_html(rng, count)
    missing = VIEWS[len(image_urls):] if 0 < len(image_urls) < len(VIEWS) else ()
    if missing:
        views = missing[0] if len(missing) == 1 else f"{', '.join(missing[:-1])} or {missing[-1]}"
        html += f"<h3>Photo coverage</h3><p>The photos do not show the {views} of the vehicle.</p>"
    return html + (UNSAFE_MARKUP if unsafe else "")


def _findings_html(rng: random.Random, count: int) -> str:
    parts = rng.sample(PARTS, count)
    rows = []
    worst = 0
    for part in parts:
        severity = rng.randrange(len(SEVERITIES))
        worst = max(worst, severity)
        damage = rng.choice(DAMAGES)
        size = rng.randint(2, 40)
        rows.append(f"<li><strong>{part.capitalize()}</strong>: {SEVERITIES[severity]} {damage}, "
                    f"about {size} cm across.</li>")
    areas = "one damaged area" if count == 1 else f"{count} damaged areas"
    summary = f"<p>The vehicle shows {areas}; the worst is {SEVERITIES[worst]}.</p>"
    return summary + "<ul>" + "".join(rows) + "</ul>"


def contains_html(text: str) -> bool:
    return bool(_HTML_TAG.search(text))


def extract_html(text: str) -> str:
    """The HTML part of a prompt text: from its first tag to its last one."""
    tags = list(_HTML_TAG.finditer(text))
    if not tags:
        return text
    return text[tags[0].start(): tags[-1].end()]


def translate_html(html: str, lang: str) -> str:
    """Prefix every non-blank text node with ``[lang] ``; tags and comments pass through byte for byte."""
    out = []
    for token in _TOKEN.split(html):
        if not token or token.startswith("<") or not token.strip():
            out.append(token)
            continue
        stripped = token.lstrip()
        out.append(token[: len(token) - len(stripped)] + f"[{lang}] " + stripped)
    return "".join(out)

