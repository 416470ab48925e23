"""The wheel: it carries every package and the templates, and an installation of it serves every page."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import base_config

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("genclient", "app", "database", "services", "workers", "templates")
ADMIN_TOKEN = "admin-token-for-the-wheel-test-0123456789"

# Run in a fresh interpreter, cwd outside the checkout, with the installed wheel first on sys.path.
SERVE_PAGES = r"""
import json, re, sys
from pathlib import Path

site, settings = Path(sys.argv[1]), json.loads(sys.argv[2])
sys.path.insert(0, str(site))
import app, genclient
from app import create_app

for module in (app, genclient):
    assert Path(module.__file__).is_relative_to(site), f"{module.__name__} imported from {module.__file__}"
assert Path(app.TEMPLATES).is_relative_to(site), app.TEMPLATES

flask_app = create_app(settings, start_worker=False)
try:
    web = flask_app.test_client()
    lots = [genclient.make_lot(f"wheel-{i}", [f"http://127.0.0.1:9/{i}.jpg"]) for i in range(2)]
    accepted = web.post("/api/v1/generate-descriptions", json={
        "signature": genclient.sign_lots(settings["SHARED_KEY"], lots), "version": "1.0.0", "languages": ["en"],
        "lots": lots})
    assert accepted.status_code == 201, accepted.get_data(as_text=True)
    job_id = accepted.get_json()["job_id"]
    pages = {}
    for path in ("/", "/docs", "/dashboard/login"):
        pages[path] = web.get(path)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', pages["/dashboard/login"].get_data(as_text=True))
    signed_in = web.post("/dashboard/login", data={"csrf_token": csrf.group(1), "token": settings["ADMIN_TOKEN"]})
    assert signed_in.status_code == 302, signed_in.status_code
    for path in ("/dashboard", f"/dashboard/jobs/{job_id}"):
        pages[path] = web.get(path)
    print(json.dumps({path: [page.status_code, page.mimetype, page.get_data(as_text=True)]
                      for path, page in pages.items()}))
finally:
    flask_app.extensions["genservice"].close()
"""


def python_files(folder: Path) -> set[str]:
    return {p.relative_to(ROOT).as_posix() for p in folder.rglob("*.py") if "__pycache__" not in p.parts}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The project's wheel, built offline from a copy of the sources (the checkout gets no build/ folder)."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    for name in SOURCES:
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                           "--no-index", "--wheel-dir", str(work / "dist"), str(source)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    (built,) = (work / "dist").glob("*.whl")
    return built


def test_the_wheel_holds_every_module_and_template_of_the_checkout(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    templates = {f"app/templates/{p.name}" for p in (ROOT / "templates").iterdir() if p.is_file()}
    assert templates and templates <= names, sorted(templates - names)
    modules = set().union(*(python_files(ROOT / name) for name in SOURCES if name != "templates"))
    assert modules - names == set(), "packages missing from [tool.setuptools] packages in pyproject.toml"
    migrations = {p.relative_to(ROOT).as_posix() for p in (ROOT / "database").rglob("*") if p.suffix in (".ini",
                                                                                                        ".mako")}
    assert migrations <= names, sorted(migrations - names)
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "genservice = genclient.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_an_installed_wheel_serves_every_page_from_its_own_templates(wheel, sandbox, tmp_path):
    site = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                           "--target", str(site), str(wheel)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    settings = {**base_config(f"sqlite:///{tmp_path / 'wheel.db'}", sandbox.url, tmp_path),
                "ADMIN_TOKEN": ADMIN_TOKEN, "SESSION_SECRET": "session-secret-for-the-wheel-test-0123",
                "WORKER_ENABLED": "false"}
    served = subprocess.run([sys.executable, "-I", "-c", SERVE_PAGES, str(site), json.dumps(settings)],
                            cwd=elsewhere, capture_output=True, text=True, timeout=120)
    assert served.returncode == 0, served.stderr
    pages = json.loads(served.stdout.splitlines()[-1])
    for path, (status, mimetype, body) in pages.items():
        assert (status, mimetype) == (200, "text/html"), (path, status, body[:300])
        assert "</html>" in body, path
    assert "Generation Service" in pages["/"][2]
    assert "/api/v1/generate-descriptions" in pages["/docs"][2]
    assert "wheel-0" in pages[next(p for p in pages if p.startswith("/dashboard/jobs/"))][2]
