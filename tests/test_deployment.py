"""Deployment files: docker-compose.yml's structure, the Dockerfile's essentials, nginx.conf checked by nginx.

Docker does not run here, so the compose file is read as YAML and the Dockerfile as text; nginx
itself (Debian's package) checks the configuration and proxies to a live app on loopback ports.
"""
from __future__ import annotations

import fnmatch
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import requests
import yaml

from app.config import Settings
from tests.support.common import free_port

ROOT = Path(__file__).resolve().parent.parent
NGINX = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()),
                                       None)
needs_nginx = pytest.mark.skipif(NGINX is None, reason="nginx is not installed (apt-get install -y nginx-light)")
VARIABLE = re.compile(r"\$\{(\w+)(?::([-?])([^}]*))?\}")


@pytest.fixture
def engine_name():
    return "sqlite"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ${NAME}, ${NAME:-default} and ${NAME:?error} against ``env``."""
    def one(match: re.Match) -> str:
        name, kind, rest = match.groups()
        if env.get(name):
            return env[name]
        if kind == "?":
            raise KeyError(f"{name}: {rest}")
        return rest if kind == "-" else ""
    return VARIABLE.sub(one, str(value))


def variables_read_by_the_service() -> set[str]:
    sources = (ROOT / "app" / "config.py").read_text() + (ROOT / "gunicorn.conf.py").read_text()
    return set(re.findall(r'"([A-Z][A-Z0-9_]{2,})"', sources))


# ---- docker-compose.yml -------------------------------------------------------------------------

def test_compose_has_the_app_its_database_redis_and_nginx(compose):
    assert set(compose["services"]) == {"app", "db", "redis", "nginx"}
    assert compose["services"]["db"]["image"] == "postgres:15"
    assert compose["services"]["app"]["build"] == "."


def test_the_database_has_a_healthcheck_and_a_named_volume(compose):
    db = compose["services"]["db"]
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])
    volume, target = db["volumes"][0].split(":")[:2]
    assert target == "/var/lib/postgresql/data" and volume in compose["volumes"]


def test_the_app_starts_after_healthy_database_and_redis(compose):
    depends = compose["services"]["app"]["depends_on"]
    assert depends["db"]["condition"] == "service_healthy"
    assert depends["redis"]["condition"] == "service_healthy"
    assert "redis-cli" in compose["services"]["redis"]["healthcheck"]["test"]
    assert compose["services"]["nginx"]["depends_on"]["app"]["condition"] == "service_healthy"


def test_secrets_come_from_the_host_and_shared_key_is_required(compose):
    env = compose["services"]["app"]["environment"]
    assert env["SHARED_KEY"].startswith("${SHARED_KEY:?")
    assert env["OPENAI_API_KEY"].startswith("${OPENAI_API_KEY")
    with pytest.raises(KeyError):
        interpolate(env["SHARED_KEY"], {})


def test_the_app_environment_is_what_the_service_reads_and_it_parses(compose):
    env = compose["services"]["app"]["environment"]
    assert set(env) <= variables_read_by_the_service()
    host = {"SHARED_KEY": "k" * 40, "OPENAI_API_KEY": "sk-test"}
    resolved = {name: interpolate(value, host) for name, value in env.items()}
    assert resolved["DATABASE_URL"] == "postgresql://genservice:genservice@db:5432/generation_service"
    assert resolved["RATELIMIT_STORAGE_URI"] == "redis://redis:6379/0"
    settings = Settings.from_env(resolved)
    assert settings.database_url == resolved["DATABASE_URL"] and settings.openai_api_key == "sk-test"


def test_the_database_credentials_match_between_app_and_db(compose):
    db_env = {k: interpolate(v, {}) for k, v in compose["services"]["db"]["environment"].items()}
    url = interpolate(compose["services"]["app"]["environment"]["DATABASE_URL"], {})
    assert url == (f"postgresql://{db_env['POSTGRES_USER']}:{db_env['POSTGRES_PASSWORD']}@db:5432/"
                   f"{db_env['POSTGRES_DB']}")


def test_only_nginx_is_published(compose):
    services = compose["services"]
    assert services["nginx"]["ports"] == ["80:80"]
    assert all("ports" not in services[name] for name in ("app", "db", "redis"))
    assert "./nginx.conf:/etc/nginx/nginx.conf:ro" in services["nginx"]["volumes"]


# ---- Dockerfile ---------------------------------------------------------------------------------

def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_dockerfile_runs_gunicorn_as_a_non_root_user_with_a_healthcheck():
    steps = dockerfile_instructions()
    kinds = [kind for kind, _ in steps]
    assert steps[0] == ("FROM", "python:3.11-slim")
    user = [arg for kind, arg in steps if kind == "USER"]
    assert user and user[-1] not in ("root", "0")
    assert kinds.index("USER") > max(i for i, kind in enumerate(kinds) if kind == "RUN"), "USER comes after every RUN"
    healthcheck = next(arg for kind, arg in steps if kind == "HEALTHCHECK")
    assert "/health" in healthcheck
    cmd = next(arg for kind, arg in reversed(steps) if kind == "CMD")
    assert cmd == '["gunicorn", "-c", "gunicorn.conf.py", "main:app"]'
    assert any(kind == "RUN" and re.search(r"pip install (--no-deps )?\.(\s|$)", arg) for kind, arg in steps)


def test_dockerignore_keeps_what_the_image_needs():
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    needed = ["main.py", "gunicorn.conf.py", "pyproject.toml", "README.md", "app/__init__.py",
              "database/migrations/env.py", "services/__init__.py", "workers/__init__.py", "templates/base.html"]
    for path in needed:
        assert not any(fnmatch.fnmatch(path, p) or path.startswith(p.rstrip("/") + "/") for p in patterns), path
    assert ".env" in patterns and ".git" in patterns


# ---- nginx --------------------------------------------------------------------------------------

def directives(text: str, name: str) -> list[str]:
    return [m.strip() for m in re.findall(rf"^\s*{name}\s+([^;{{]+);", text, re.M)]


def test_nginx_conf_has_the_timeouts_limits_and_headers():
    text = (ROOT / "nginx.conf").read_text()
    assert directives(text, "listen") == ["80 default_server"], "plain HTTP only, so it is valid without certificates"
    assert directives(text, "proxy_read_timeout") == ["300s"] and directives(text, "proxy_send_timeout") == ["300s"]
    assert directives(text, "client_max_body_size") == ["100M"]
    headers = dict(d.split(None, 1) for d in directives(text, "proxy_set_header"))
    assert headers["X-Forwarded-For"] == "$proxy_add_x_forwarded_for" and headers["X-Forwarded-Proto"] == "$scheme"
    assert "X-Request-ID" in headers
    assert {d.split()[0] for d in directives(text, "add_header")} >= {"X-Frame-Options", "X-Content-Type-Options",
                                                                      "Referrer-Policy"}
    assert directives(text, "server") == ["app:5000"]


def nginx_copy(folder: Path, upstream: str, listen: str | None = None, tls: Path | None = None) -> Path:
    """nginx.conf with the upstream (and optionally the port) replaced, so no name has to resolve."""
    text = (ROOT / "nginx.conf").read_text().replace("server app:5000;", f"server {upstream};")
    if listen:
        text = text.replace("listen 80 default_server;", f"listen {listen} default_server;")
    text = text.replace("/etc/nginx/genservice.d/", f"{folder}/genservice.d/")
    (folder / "genservice.d").mkdir(exist_ok=True)
    if tls is not None:
        (folder / "genservice.d" / "tls.conf").write_text(
            (ROOT / "nginx-tls.conf").read_text().replace("/etc/nginx/certs/", f"{tls}/")
            .replace("listen 443 ssl;", f"listen 127.0.0.1:{free_port()} ssl;"))
    path = folder / "nginx.conf"
    path.write_text(text)
    return path


def nginx_test(folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run([NGINX, "-t", "-e", "stderr", "-p", str(folder), "-c", "nginx.conf"],
                          capture_output=True, text=True, timeout=30)


@needs_nginx
def test_nginx_accepts_the_configuration(tmp_path):
    nginx_copy(tmp_path, "127.0.0.1:5000")
    checked = nginx_test(tmp_path)
    assert checked.returncode == 0, checked.stderr


@needs_nginx
@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is needed to make a test certificate")
def test_nginx_accepts_the_tls_server_block_with_certificates(tmp_path):
    certs = tmp_path / "certs"
    certs.mkdir()
    made = subprocess.run(shlex.split(f"openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost "
                                      f"-keyout {certs}/privkey.pem -out {certs}/fullchain.pem"),
                          capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    nginx_copy(tmp_path, "127.0.0.1:5000", tls=certs)
    checked = nginx_test(tmp_path)
    assert checked.returncode == 0, checked.stderr


@pytest.fixture
def proxy(live, tmp_path):
    """Real nginx with this configuration, on a loopback port, in front of a live app."""
    if NGINX is None:
        pytest.skip("nginx is not installed (apt-get install -y nginx-light)")
    port = free_port()
    nginx_copy(tmp_path, live.url.removeprefix("http://"), listen=f"127.0.0.1:{port}")
    process = subprocess.Popen([NGINX, "-e", "stderr", "-p", str(tmp_path), "-c", "nginx.conf",
                                "-g", f"daemon off; pid {tmp_path}/nginx.pid;"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                requests.get(f"{url}/health", timeout=5)
                break
            except requests.ConnectionError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"nginx did not start: {process.stderr.read()}") from None
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(10)
        process.stderr.close()


def test_nginx_proxies_with_security_headers_and_request_ids(proxy):
    health = requests.get(f"{proxy}/health", timeout=10)
    assert health.status_code == 200 and health.json()["status"] == "healthy"
    assert health.headers["X-Frame-Options"] == "DENY"
    assert health.headers["X-Content-Type-Options"] == "nosniff"
    assert health.headers["Referrer-Policy"] == "strict-origin-when-cross-origin"
    assert "nginx/" not in health.headers.get("Server", "")
    given = requests.get(f"{proxy}/health", headers={"X-Request-ID": "client-id-42"}, timeout=10)
    assert given.headers["X-Request-ID"] == "client-id-42"
    assert re.fullmatch(r"[0-9a-f]{32}", health.headers["X-Request-ID"]), "nginx made one when none was sent"


def test_nginx_passes_metrics_to_loopback_and_errors_as_json(proxy):
    metrics = requests.get(f"{proxy}/metrics", timeout=10)
    assert metrics.status_code == 200 and "# TYPE background_worker_last_beat_seconds gauge" in metrics.text
    unsigned = requests.get(f"{proxy}/api/v1/batch-status/some-job", timeout=10)
    assert unsigned.status_code == 401 and unsigned.json()["code"] == "MISSING_SIGNATURE"


def test_gs2_signatures_hold_through_nginx(proxy, live, image_server):
    """nginx passes the path, query and body as the client signed them, and the nonce store still
    refuses the same request sent twice through it."""
    from services import clients
    from tests.support.client import Gs2Api, gs2_authorization, lot

    issued = clients.add_client(live.app.extensions["genservice"].db, "through-nginx")
    api = Gs2Api(proxy, issued.client_id, issued.key_id, issued.secret)
    created = api.generate([lot(f"ng-{i}", [image_server.url("/img/a.jpg")]) for i in range(2)])
    assert created.status_code == 201, created.text
    job_id = created.json()["job_id"]
    listing = api.request("GET", "/api/v1/batch-jobs", "limit=5&offset=0")
    assert listing.status_code == 200 and [j["job_id"] for j in listing.json()["jobs"]] == [job_id]
    path = f"/api/v1/batch-status/{job_id}"
    auth = gs2_authorization(issued.secret, issued.client_id, issued.key_id, "GET", path)
    answers = [requests.get(proxy + path, headers={"Authorization": auth}, timeout=10) for _ in range(2)]
    assert [a.status_code for a in answers] == [200, 403] and answers[1].json()["code"] == "SIGNATURE_REPLAYED"
