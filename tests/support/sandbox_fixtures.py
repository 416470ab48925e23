"""Fixtures of the modules that test the sandbox on its own: one sandbox per module, reset before each test,
and the official SDK pointed at it. A module imports them by name (pytest finds imported fixtures)."""
from __future__ import annotations

import pytest
from openai import OpenAI

from services.sandbox import SandboxServer


@pytest.fixture(scope="module")
def sandbox():
    with SandboxServer(port=0) as server:
        yield server


@pytest.fixture(autouse=True)
def clean(sandbox):
    sandbox.reset()
    yield


@pytest.fixture
def client(sandbox):
    with OpenAI(api_key="sk-test", base_url=sandbox.url, max_retries=0, _strict_response_validation=True) as c:
        yield c
