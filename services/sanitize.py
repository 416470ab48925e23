"""Model output is untrusted: only a small set of tags, and no attributes, ever leave the service."""
from __future__ import annotations

import re

import nh3

ALLOWED_TAGS = frozenset({"p", "ul", "ol", "li", "strong", "em", "b", "i", "br", "h3", "h4"})
_FENCE = re.compile(r"^\s*```[a-zA-Z]*\s*\n?|\n?\s*```\s*$")
_DANGEROUS_BLOCKS = re.compile(r"<(script|style|iframe|object|embed|template|noscript)\b.*?</\1\s*>", re.I | re.S)


def sanitize_html(html: str | None) -> str:
    """Keep the allowlisted tags without attributes; drop scripts, styles and their text entirely."""
    if not html:
        return ""
    text = _FENCE.sub("", html.strip())
    text = _DANGEROUS_BLOCKS.sub("", text)
    cleaned = nh3.clean(
        text,
        tags=set(ALLOWED_TAGS),
        attributes={},
        clean_content_tags={"script", "style", "iframe", "object", "embed", "template", "noscript", "textarea", "title"},
        strip_comments=True,
        link_rel=None,
        url_schemes=set(),
    )
    return cleaned.strip()
