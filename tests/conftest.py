"""Fixtures: the app on PostgreSQL or SQLite, a live HTTP server, the OpenAI sandbox, image and webhook servers.

Nothing here talks to any address but 127.0.0.1: the app is configured with an outbound
allowlist of loopback names, so even an invented URL can never leave the machine.
"""
from __future__ import annotations

import os
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from sqlalchemy import text

from app import create_app
from database import Database, normalize_url
from database.models import Base
from services.sandbox import SandboxConfig, SandboxServer
from tests.support.client import TEST_KEY, Api
from tests.support.image_server import ImageServer
from tests.support.live import LiveServer
from tests.support.receiver import WebhookReceiver
from tests.support.tcp_proxy import TcpProxy

# under pytest-xdist every worker process has a database of its own, named after the suite's with the worker's id
_XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
PG_URL = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/genservice_test") + (
    f"_{_XDIST_WORKER}" if _XDIST_WORKER else "")
ENGINES = ["postgresql", "sqlite"]


def _ensure_pg_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    admin = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


@pytest.fixture(scope="session")
def pg_url() -> str:
    _ensure_pg_database(PG_URL)
    return PG_URL


def truncate_pg(url: str) -> None:
    db = Database(normalize_url(url, "instance"))
    from database.migrate import upgrade

    upgrade(db)
    tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
    with db.engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    db.dispose()


@pytest.fixture(params=ENGINES)
def engine_name(request) -> str:
    return request.param


@pytest.fixture
def database_url(engine_name, tmp_path, request) -> str:
    if engine_name == "postgresql":
        url = request.getfixturevalue("pg_url")
        truncate_pg(url)
        return url
    return f"sqlite:///{tmp_path / 'test.db'}"


@pytest.fixture
def pg_database_url(pg_url) -> str:
    """For tests that need PostgreSQL's row locks (several workers on one database)."""
    truncate_pg(pg_url)
    return pg_url


@pytest.fixture
def db_proxy(pg_database_url):
    """A cuttable TCP proxy in front of PostgreSQL, to make the database go away for a while (or drop
    every open connection, as a restart would); yields (proxy, DATABASE_URL through it)."""
    parts = urlsplit(pg_database_url)
    proxy = TcpProxy((parts.hostname, parts.port or 5432)).start()
    netloc = f"{parts.username}@127.0.0.1:{proxy.port}" if parts.username else f"127.0.0.1:{proxy.port}"
    yield proxy, urlunsplit(parts._replace(netloc=netloc))
    proxy.stop()


@pytest.fixture(scope="session")
def sandbox_server():
    server = SandboxServer(SandboxConfig()).start()
    yield server
    server.stop()


@pytest.fixture
def sandbox(sandbox_server):
    sandbox_server.reset()
    yield sandbox_server
    sandbox_server.reset()


@pytest.fixture(scope="session")
def image_server():
    server = ImageServer().start()
    yield server
    server.stop()


@pytest.fixture
def receiver():
    server = WebhookReceiver().start()
    yield server
    server.stop()


def base_config(database_url: str, sandbox_url: str, tmp_path) -> dict:
    return {
        "TESTING": "true",
        "SHARED_KEY": TEST_KEY,
        "DATABASE_URL": database_url,
        "OPENAI_BASE_URL": sandbox_url,
        "OPENAI_API_KEY": "",
        "OPENAI_SANDBOX": "true",
        "OPENAI_MAX_RETRIES": "0",
        "ALLOW_PRIVATE_URLS": "true",
        "OUTBOUND_ALLOWED_HOSTS": "127.0.0.1,localhost,::1",
        "WORKER_POLL_INTERVAL": "0.2",
        "WORKER_LEASE_SECONDS": "10",
        "WEBHOOK_RETRY_BASE_SECONDS": "0.2",
        "WEBHOOK_TIMEOUT": "5",
        "IMAGE_TIMEOUT": "3",
        "RATELIMIT_ENABLED": "false",
        "INSTANCE_PATH": str(tmp_path / "instance"),
        "LOG_LEVEL": "WARNING",
    }


@pytest.fixture
def make_app(database_url, sandbox, tmp_path):
    """Build apps (closed at teardown); keyword arguments override environment-style settings."""
    apps = []

    def factory(**overrides):
        config = base_config(database_url, sandbox.url, tmp_path)
        config.update({k.upper(): str(v) for k, v in overrides.items()})
        app = create_app(config)
        apps.append(app)
        return app

    yield factory
    for app in apps:
        app.extensions["genservice"].close()


@pytest.fixture
def make_live(make_app):
    servers = []

    def factory(**overrides):
        server = LiveServer(make_app(**overrides)).start()
        servers.append(server)
        return server

    yield factory
    for server in servers:
        server.stop()


@pytest.fixture
def live(make_live):
    return make_live()


@pytest.fixture
def api(live) -> Api:
    return Api(live.url)


@pytest.fixture
def runtime(live):
    return live.app.extensions["genservice"]


@pytest.fixture(scope="module", params=ENGINES)
def module_live(request, sandbox_server, tmp_path_factory):
    """One live server per module and engine, for tests that only read or reject (no shared state)."""
    tmp = tmp_path_factory.mktemp("module")
    if request.param == "postgresql":
        url = request.getfixturevalue("pg_url")
        truncate_pg(url)
    else:
        url = f"sqlite:///{tmp / 'test.db'}"
    app = create_app(base_config(url, sandbox_server.url, tmp))
    server = LiveServer(app).start()
    yield server
    server.stop()
    app.extensions["genservice"].close()


@pytest.fixture
def module_api(module_live) -> Api:
    return Api(module_live.url)
