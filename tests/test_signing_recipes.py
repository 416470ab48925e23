"""The signing recipes users copy from the README produce the bytes the service verifies."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest

from services import signing
from tests.support.client import TEST_KEY, body_signature

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")
LOTS = [{"lot_id": "x-1", "additional_info": "Передний бампер — вмятина, 🚗 café", "webhook": "https://h/x?a=1&b=/",
         "images": [{"url": "https://cdn.example.com/a.jpg", "alt": {"z": 1, "a": [True, None, 1.5]}}]}]


def readme_node_recipe() -> str:
    with open(README, encoding="utf-8") as fh:
        text = fh.read()
    section = text.split("### Node.js signature", 1)[1]
    return re.search(r"```javascript\n(.*?)```", section, re.S).group(1)


def test_python_recipe_matches_the_service():
    assert signing.verify([TEST_KEY], signing.canonical_lots(LOTS), body_signature(LOTS))
    assert signing.verify([TEST_KEY], signing.canonical_lots(LOTS), body_signature(LOTS, prefix=False))
    assert not signing.verify([TEST_KEY], signing.canonical_lots(LOTS), body_signature(LOTS, key="other" * 8))


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
def test_readme_node_recipe_signs_the_same_bytes(tmp_path):
    script = readme_node_recipe() + (
        "\nconst input = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
        "\nprocess.stdout.write(sign(canonical(input.lots), input.key));\n")
    path = tmp_path / "sign.js"
    path.write_text(script, encoding="utf-8")
    result = subprocess.run(["node", str(path)], input=json.dumps({"lots": LOTS, "key": TEST_KEY}),
                            capture_output=True, text=True, timeout=30, check=True)
    assert result.stdout == body_signature(LOTS)
