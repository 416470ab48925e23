"""/health, /metrics and the home page."""
from __future__ import annotations

import requests


def test_health_reports_database_worker_and_version(module_live):
    answer = requests.get(f"{module_live.url}/health", timeout=10)
    assert answer.status_code == 200
    body = answer.json()
    assert body["status"] == "healthy" and body["service"] == "generation-service"
    assert body["database"] == "connected" and body["background_worker"] == "running"
    assert body["version"] == "2.0.0" and body["timestamp"].endswith("Z")
    assert body["openai"]["mode"].startswith("sandbox")


def test_health_is_503_when_the_worker_is_stopped(make_live):
    live = make_live()
    live.app.extensions["genservice"].worker.stop(timeout=5)
    answer = requests.get(f"{live.url}/health", timeout=10)
    assert answer.status_code == 503 and answer.json()["background_worker"] == "stopped"


def test_health_says_disabled_when_the_worker_is_off(make_live):
    answer = requests.get(f"{make_live(WORKER_ENABLED='false').url}/health", timeout=10)
    assert answer.status_code == 200 and answer.json()["background_worker"] == "disabled"


def test_metrics_use_the_spec_names(module_live):
    requests.get(f"{module_live.url}/health", timeout=10)
    answer = requests.get(f"{module_live.url}/metrics", timeout=10)
    assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("text/plain")
    for name in ("generation_requests_total", "generation_duration_seconds", "openai_api_errors_total",
                 "webhook_deliveries_total", "batch_jobs_total", "database_operations_total"):
        assert name in answer.text


def test_home_page_has_security_headers(module_live):
    answer = requests.get(f"{module_live.url}/", timeout=10)
    assert answer.status_code == 200 and "Generation Service" in answer.text
    assert answer.headers["X-Frame-Options"] == "DENY"
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    assert "frame-ancestors 'none'" in answer.headers["Content-Security-Policy"]


def test_database_operations_are_counted_by_kind(module_live):
    requests.get(f"{module_live.url}/health", timeout=10)
    text = requests.get(f"{module_live.url}/metrics", timeout=10).text
    reads = [line for line in text.splitlines() if line.startswith('database_operations_total{operation="read"}')]
    assert reads and float(reads[0].split()[-1]) > 0
