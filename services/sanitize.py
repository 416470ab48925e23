"""Model output is untrusted: only a small set of tags, and no attributes, ever leave the service.

Everything here runs in time linear in the input: it runs on every translation and dashboard view,
and the text comes from a model that can be steered into writing anything. The HTML itself is parsed
by nh3 (html5ever), which drops scripts, styles and the like together with their text; the only
work done by hand is taking off a Markdown code fence, with plain string operations.
"""
from __future__ import annotations

import nh3

ALLOWED_TAGS = frozenset({"p", "ul", "ol", "li", "strong", "em", "b", "i", "br", "h3", "h4"})
DROPPED_WITH_CONTENT = frozenset({"script", "style", "iframe", "object", "embed", "template", "noscript", "textarea",
                                  "title"})
_FENCE = "```"


def strip_code_fence(text: str) -> str:
    """``text`` without a leading "```lang" and a trailing "```", as models sometimes wrap HTML."""
    text = text.strip()
    if text.startswith(_FENCE):
        start = len(_FENCE)
        while start < len(text) and text[start].isascii() and text[start].isalpha():
            start += 1
        text = text[start:].lstrip()
    if text.endswith(_FENCE):
        text = text[:-len(_FENCE)].rstrip()
    return text


def sanitize_html(html: str | None) -> str:
    """Keep the allowlisted tags without attributes; drop scripts, styles and their text entirely."""
    if not html:
        return ""
    cleaned = nh3.clean(
        strip_code_fence(html),
        tags=set(ALLOWED_TAGS),
        attributes={},
        clean_content_tags=set(DROPPED_WITH_CONTENT),
        strip_comments=True,
        link_rel=None,
        url_schemes=set(),
    )
    return cleaned.strip()
