"""The HTML sanitizer keeps only the allowlist and runs in linear time on anything a model writes."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from services.sanitize import sanitize_html, strip_code_fence


@pytest.mark.parametrize("given,expected", [
    ("```html\n<p>Dent</p>\n```", "<p>Dent</p>"),
    ("  ```\n<p>Dent</p>```  ", "<p>Dent</p>"),
    ("```", ""),
    ("<p>Dent</p>", "<p>Dent</p>"),
    ("<p>a ``` b</p>", "<p>a ``` b</p>"),
])
def test_code_fences_are_taken_off(given, expected):
    assert strip_code_fence(given) == expected


@pytest.mark.parametrize("given,expected", [
    ("<p onclick='x()'>Dent<script>alert(1)</script></p>", "<p>Dent</p>"),
    ("<ul><li><a href='javascript:x'>Scratch</a></li></ul>", "<ul><li>Scratch</li></ul>"),
    ("<SCRIPT >steal()</SCRIPT >left", "left"),
    ("<p>kept</p><script>never closed", "<p>kept</p>"),
    ("<noscript><p>hidden</p></noscript><style>p{}</style><template><p>t</p></template>ok", "ok"),
    ("<iframe src=x>in</iframe><object>o</object><h3>Rear</h3>", "<h3>Rear</h3>"),
])
def test_only_the_allowlist_survives(given, expected):
    assert sanitize_html(given) == expected


# Inputs that made the former regular expressions backtrack: each took quadratic time in its length
# (0.55 s for 20,000 spaces, so about 220 s for 400,000). Linear code does all of them in well under
# a second; the bound below is a hundred times that, so only a quadratic implementation can miss it.
HOSTILE = {
    "spaces": "a" + " " * 400_000 + "b",
    "newlines": "a" + "\n " * 200_000 + "b",
    "fences": "```" * 130_000,
    "open scripts": "<script>" * 50_000,
    "open styles with spaces": "<style " * 60_000,
    "nested paragraphs": "<p>" * 130_000,
}


def test_hostile_markup_is_sanitized_in_linear_time():
    # a separate interpreter, so a regression fails at the bound instead of hanging the suite
    program = textwrap.dedent("""
        from services.sanitize import sanitize_html
        from tests.test_sanitize import HOSTILE
        for name, text in HOSTILE.items():
            sanitize_html(text)
        print("done", len(HOSTILE))
    """)
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=100)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"done {len(HOSTILE)}"
