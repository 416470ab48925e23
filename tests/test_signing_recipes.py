"""The signing recipes users copy from the README produce the bytes the service verifies."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess

import pytest
import requests

from services import clients, signing
from tests.support.client import TEST_KEY, body_signature, lot

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")
# U+007F (DEL) is escaped by Python's json.dumps but not by JSON.stringify: the Node recipe must escape it too
LOTS = [{"lot_id": "x-1", "additional_info": "Передний бампер — вмятина, 🚗 café \u007f", "webhook": "https://h/x?a=1&b=/",
         "images": [{"url": "https://cdn.example.com/a.jpg", "alt": {"z": 1, "a": [True, None, 1.5]}}]}]


def readme_text() -> str:
    with open(README, encoding="utf-8") as fh:
        return fh.read()


def readme_node_recipe() -> str:
    section = readme_text().split("### Node.js signature", 1)[1]
    return re.search(r"```javascript\n(.*?)```", section, re.S).group(1)


def gs2_recipe(language: str) -> str:
    """The README's GS2 recipe in ``language`` (python or javascript), from the GS2 section."""
    section = readme_text().split("### The GS2 signature", 1)[1].split("\n## ", 1)[0]
    return re.search(rf"```{language}\n(.*?)```", section, re.S).group(1)


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


def test_the_reference_node_recipe_escapes_del_like_python():
    assert "\\u007f" in signing.canonical_lots(LOTS).decode(), "json.dumps escapes DEL; the recipe must match it"


# ---- GS2 recipes, against a live server ---------------------------------------------------------

GS2_INFO = "Škoda Octavia — вмятина \u007f 🚗 «front»"


@pytest.fixture(params=["added client", "implicit client"])
def credentials(request, live):
    """(client id, key id, secret) of a client added in the database, or of SHARED_KEY's implicit client with
    the key id the README describes."""
    if request.param == "implicit client":
        key_id = "sk_" + hashlib.sha256(b"genservice key id\n" + TEST_KEY.encode()).hexdigest()[:16]
        return "default", key_id, TEST_KEY
    issued = clients.add_client(live.app.extensions["genservice"].db, "recipe-client", "Recipes")
    return issued.client_id, issued.key_id, issued.secret


def recipe_lots(image_server, prefix: str) -> list[dict]:
    return [lot(f"{prefix}-ü-{i}", [image_server.url(f"/img/{prefix}{i}.jpg")], GS2_INFO) for i in range(2)]


def test_readme_python_gs2_recipe_is_accepted_by_the_service(live, image_server, credentials):
    namespace: dict = {}
    exec(gs2_recipe("python"), namespace)
    namespace["BASE_URL"] = live.url
    namespace["CLIENT_ID"], namespace["KEY_ID"], namespace["SECRET"] = credentials
    call = namespace["call"]
    status, job = call("POST", "/api/v1/generate-descriptions",
                       payload={"version": "1.0.0", "languages": ["en", "de"], "lots": recipe_lots(image_server, "py")})
    assert status == 201, job
    status, progress = call("GET", f"/api/v1/batch-status/{job['job_id']}")
    assert (status, progress["job_id"]) == (200, job["job_id"])
    status, listing = call("GET", "/api/v1/batch-jobs", "limit=5&offset=0")
    assert status == 200 and [j["id"] for j in listing["jobs"]] == [job["job_id"]]
    # the recipe's signature is refused once the secret is wrong, so the acceptance above is the recipe's doing
    namespace["SECRET"] = "not-the-secret-" * 3
    status, refused = call("GET", f"/api/v1/batch-status/{job['job_id']}")
    assert (status, refused["code"]) == (403, "INVALID_SIGNATURE")


NODE_RUN = """
(async () => {
  const input = JSON.parse(require('fs').readFileSync(0, 'utf8'));
  const [created, job] = await call('POST', '/api/v1/generate-descriptions', '', {version: '1.0.0', languages: ['en'],
                                                                                   lots: input.lots});
  const [polled, progress] = await call('GET', `/api/v1/batch-status/${job.job_id}`);
  const [listed, listing] = await call('GET', '/api/v1/batch-jobs', 'limit=5&offset=0');
  console.log(JSON.stringify({created, job, polled, progress, listed, listing}));
})().catch((error) => { console.error(error); process.exit(1); });
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
def test_readme_node_gs2_recipe_is_accepted_by_the_service(live, image_server, tmp_path, credentials):
    client_id, key_id, secret = credentials
    recipe = gs2_recipe("javascript")
    recipe, base = re.subn(r"const BASE_URL = .*;", f"const BASE_URL = {json.dumps(live.url)};", recipe)
    recipe, keys = re.subn(r"const \[CLIENT_ID, KEY_ID, SECRET\] = .*;",
                           f"const [CLIENT_ID, KEY_ID, SECRET] = {json.dumps([client_id, key_id, secret])};", recipe)
    assert (base, keys) == (1, 1), "the recipe's settings lines changed"
    script = tmp_path / "gs2.js"
    script.write_text(recipe + NODE_RUN, encoding="utf-8")
    lots = recipe_lots(image_server, "node")
    run = subprocess.run(["node", str(script)], input=json.dumps({"lots": lots}, ensure_ascii=False),
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["created"] == 201, out["job"]
    assert (out["polled"], out["progress"]["job_id"]) == (200, out["job"]["job_id"])
    assert out["listed"] == 200 and [j["id"] for j in out["listing"]["jobs"]] == [out["job"]["job_id"]]


# ---- the bytes signed, whichever encoder writes them ---------------------------------------------

def _shaped(kind: str) -> list[dict]:
    name = kind.replace(" ", "-")
    lots = [lot(f"enc-{name}-{i}", [f"http://127.0.0.1:9/{name}/{i}.jpg"], "2019 Toyota Camry, front") for i in range(3)]
    extra = {"plain": None, "int": 2 ** 62, "big int": 2 ** 80, "float": 1.5, "exponent": 1e16, "nan": float("nan"),
             "cyrillic": "Лада", "quote": 'a "b" \\ c', "del": "\u007f", "null": None}[kind]
    for item in lots:
        if kind != "plain":
            item["extra"] = extra
    return lots


@pytest.mark.parametrize("kind", ["plain", "int", "big int", "float", "exponent", "nan", "cyrillic", "quote", "del",
                                  "null"])
def test_a_body_signed_by_the_recipe_is_accepted_whatever_its_lots_hold(module_live, kind):
    """Through HTTP, as a client sends it (Python's json.dumps, NaN included): the service's own bytes for the
    signature come from orjson for plain lots and from the recipe for anything else, and match either way;
    a signature over other lots is refused."""
    lots = _shaped(kind)
    url = f"{module_live.url}/api/v1/estimate"
    other = _shaped("plain" if kind != "plain" else "int")
    for signature, expected in ((body_signature(lots), 200), (body_signature(other), 403)):
        body = json.dumps({"signature": signature, "version": "1.0.0", "languages": ["en"], "lots": lots})
        answer = requests.post(url, data=body.encode(), headers={"Content-Type": "application/json"}, timeout=30)
        assert answer.status_code == expected, (kind, answer.text[:300])
