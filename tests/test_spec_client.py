"""A client that follows the published API reference to the letter, against a live server on PostgreSQL.

It keeps the reference client's habits: a session-wide ``Content-Type: application/json`` even on
GET, the ``sha256=`` prefix on every signature, and the polling loop of its example.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import time

import pytest
import requests

from tests.support.client import TEST_KEY


class ReferenceClient:
    def __init__(self, base_url: str, shared_key: str):
        self.base_url = base_url.rstrip("/")
        self.shared_key = shared_key
        self.session = requests.Session()
        self.session.headers.update({"Content-Type": "application/json", "User-Agent": "GenerationServiceClient/1.0"})

    def _signature(self, data) -> str:
        message = json.dumps(data["lots"], separators=(",", ":"), sort_keys=True) if isinstance(data, dict) \
            else str(data)
        return "sha256=" + hmac.new(self.shared_key.encode(), message.encode(), hashlib.sha256).hexdigest()

    def _payload(self, lots, languages):
        return {"signature": self._signature({"lots": lots}), "version": "1.0.0", "languages": languages, "lots": lots}

    def sync_generate(self, lot_id, additional_info, image_urls, languages):
        lots = [{"lot_id": lot_id, "additional_info": additional_info, "images": [{"url": u} for u in image_urls]}]
        response = self.session.post(f"{self.base_url}/api/v1/generate-descriptions",
                                     json=self._payload(lots, languages), timeout=300)
        return response.json(), response.status_code

    def batch_generate(self, cars, languages, webhook_url=None):
        lots = []
        for car in cars:
            item = {"lot_id": car["lot_id"], "additional_info": car["additional_info"],
                    "images": [{"url": u} for u in car["image_urls"]]}
            if webhook_url:
                item["webhook"] = webhook_url
            lots.append(item)
        response = self.session.post(f"{self.base_url}/api/v1/generate-descriptions",
                                     json=self._payload(lots, languages))
        return (response.json()["job_id"], None) if response.status_code == 201 else (None, response.text)

    def _get(self, path, job_id):
        return self.session.get(f"{self.base_url}{path}", headers={"X-Signature": self._signature(job_id)})

    def get_job_status(self, job_id):
        response = self._get(f"/api/v1/batch-status/{job_id}", job_id)
        return (response.json(), None) if response.status_code == 200 else (None, response.text)

    def get_job_results(self, job_id):
        response = self._get(f"/api/v1/batch-results/{job_id}", job_id)
        if response.status_code == 200:
            return response.json(), None
        return None, "Job not completed yet" if response.status_code == 202 else response.text

    def download_results(self, job_id, path):
        response = self._get(f"/api/v1/batch-results/{job_id}/download", job_id)
        if response.status_code != 200:
            return False, response.text
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(response.json(), fh, ensure_ascii=False)
        return True, response.headers.get("Content-Disposition")

    def cancel_job(self, job_id):
        response = self.session.post(f"{self.base_url}/api/v1/batch-jobs/{job_id}/cancel",
                                     headers={"X-Signature": self._signature(job_id)})
        return response.status_code == 200, response.json()

    def poll_for_completion(self, job_id, poll_interval=1, max_wait_time=60, progress_callback=None):
        start = time.time()
        while time.time() - start < max_wait_time:
            status, error = self.get_job_status(job_id)
            if error:
                return None, error
            if progress_callback:
                progress_callback(status)
            if status["status"] == "completed":
                return self.get_job_results(job_id)
            if status["status"] in ("failed", "cancelled"):
                return None, f"Job {status['status']}: {status.get('error_message')}"
            time.sleep(poll_interval)
        return None, "timeout"


@pytest.fixture
def engine_name():
    """The reference client's flows run on PostgreSQL, the production database."""
    return "postgresql"


@pytest.fixture
def reference(make_live):
    return make_live()


def test_sync_with_three_photos_one_missing(reference, image_server):
    client = ReferenceClient(reference.url, TEST_KEY)
    urls = [image_server.url("/img/bmw-front.jpg"), image_server.url("/img/bmw-side.jpg"),
            image_server.url("/missing/bmw-interior.jpg")]
    result, status = client.sync_generate("sync-12345", "2021 BMW X5, front collision damage", urls, ["en", "ru", "de"])
    assert status == 200, result
    lot = result["lots"][0]
    assert [d["language"] for d in lot["descriptions"]] == ["en", "ru", "de"]
    assert lot["missing_images"] == [urls[2]] and lot["processed_images"] == 2
    wrong, status = ReferenceClient(reference.url, "not-the-key-but-long-enough-0123456789").sync_generate(
        "sync-12346", "", urls, ["en"])
    assert status == 403 and wrong["code"] == "INVALID_SIGNATURE"


def test_batch_flow_of_the_reference_example(reference, image_server, receiver, tmp_path, sandbox):
    client = ReferenceClient(reference.url, TEST_KEY)
    cars = [{"lot_id": f"batch-00{i}", "additional_info": "BMW X5 damage assessment",
             "image_urls": [image_server.url(f"/img/car{i}-1.jpg"), image_server.url(f"/img/car{i}-2.jpg")]}
            for i in range(1, 3)]
    job_id, error = client.batch_generate(cars, ["en", "de", "fr"], webhook_url=receiver.url("/webhooks/done"))
    assert job_id, error
    seen = []
    results, error = client.poll_for_completion(job_id, poll_interval=1, progress_callback=seen.append)
    assert results, error
    assert results["processing_summary"]["processed_lots"] == 2
    assert all(0.0 <= s["progress"]["completion_percentage"] <= 100.0 for s in seen)
    ok, disposition = client.download_results(job_id, tmp_path / "out.json")
    assert ok and disposition == f'attachment; filename="batch_results_{job_id}.json"'
    hook = receiver.wait_for(1)[0]
    assert hook.json()["job_id"] == job_id and hook.json()["event"] == "batch_job_completed"

    sandbox.configure(batch_in_progress_seconds=60)
    other, _ = client.batch_generate(cars, ["en"])
    cancelled, body = client.cancel_job(other)
    assert cancelled and body["status"] == "cancelled"
    status, _ = client.get_job_status(other)
    assert status["status"] == "cancelled"
