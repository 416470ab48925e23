"""The genservice command: signing, submitting JSON and CSV, waiting, the job commands, and the servers."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from sqlalchemy import func, select

from app import cli
from database import Database, normalize_url
from database.models import WorkerHeartbeat
from genclient import REFERENCE, ApiError, GenerationClient, implicit_key_id
from tests.conftest import base_config
from tests.support.blocked import MARKER as BLOCKED
from tests.support.client import TEST_KEY, Api, body_signature, header_signature, lot
from tests.support.common import free_port, wait_until

ROOT = Path(__file__).resolve().parent.parent
WEB_SIDE = "flask,werkzeug,jinja2,flask_limiter,app.api,app.web,app.dashboard,app.health,app.limits,app.errors"
WRONG_KEY = "a-wrong-key-that-is-long-enough-0123456789"


@pytest.fixture
def engine_name():
    """The command's behaviour does not depend on the database; the worker test runs on both."""
    return "sqlite"


@pytest.fixture(autouse=True)
def no_ambient_key(monkeypatch, tmp_path):
    """Keys come only from what each test passes, never from the developer's environment or instance/."""
    for name in ("SHARED_KEY", "SHARED_KEYS", "GENSERVICE_URL", "GENSERVICE_KEY", "GENSERVICE_CLIENT_ID",
                 "GENSERVICE_KEY_ID", "DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("INSTANCE_PATH", str(tmp_path / "no-instance"))


def run(*argv: str) -> int:
    return cli.main([str(a) for a in argv])


def write_json(path: Path, data) -> Path:
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


def write_csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["lot_id", "additional_info", "image_urls", "webhook"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def wait_for_health(url: str, process: subprocess.Popen, timeout: float = 60.0) -> requests.Response:
    def healthy() -> requests.Response | None:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}: {process.stderr.read()}")
        try:
            answer = requests.get(f"{url}/health", timeout=2)
        except requests.RequestException:
            return None
        return answer if answer.status_code == 200 else None

    return wait_until(healthy, timeout, f"{url}/health to answer 200", interval=0.2)


def stop(process: subprocess.Popen, signum: int = signal.SIGTERM, timeout: float = 30.0) -> int:
    process.send_signal(signum)
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)
        raise
    finally:
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


class Lines:
    """Collects a process's output lines in a thread, so a test can wait for one without blocking forever."""

    def __init__(self, stream):
        self.lines: list[str] = []
        self.ended = False
        self._changed = threading.Condition()
        self.reader = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.reader.start()

    def _read(self, stream) -> None:
        for line in stream:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self.ended = True  # the process closed its output (it exited): stop waiting
            self._changed.notify_all()

    def wait_for(self, text: str, timeout: float = 60.0) -> str:
        with self._changed:
            self._changed.wait_for(lambda: self.ended or any(text in line for line in self.lines), timeout)
        found = next((line for line in self.lines if text in line), None)
        assert found is not None, f"no line with {text!r} in {timeout} s: {''.join(self.lines)}"
        return found


def heartbeats_of(database_url: str, pid: int) -> int:
    db = Database(normalize_url(database_url, "instance"))
    try:
        with db.session() as session:
            return session.scalar(select(func.count()).select_from(WorkerHeartbeat)
                                  .where(WorkerHeartbeat.pid == pid)) or 0
    finally:
        db.dispose()


def service_env(database_url: str, sandbox_url: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SHARED_KEYS", "DATABASE_URL")}
    env.update(base_config(database_url, sandbox_url, tmp_path))
    env.update(extra)
    return env


# ---- sign ---------------------------------------------------------------------------------------

def test_sign_prints_the_spec_signature_for_every_lots_file_form(tmp_path, capsys):
    lots = [lot("s-1", ["http://127.0.0.1/a.jpg"], "Лада, удар"), lot("s-2", ["http://127.0.0.1/b.jpg"])]
    forms = {
        "body.json": {"signature": "ignored", "version": "1.0.0", "languages": ["en"], "lots": lots},
        "wrapped.json": {"lots": lots},
        "list.json": lots,
    }
    for name, data in forms.items():
        assert run("sign", "--key", TEST_KEY, write_json(tmp_path / name, data)) == 0
        assert capsys.readouterr().out.strip() == body_signature(lots), name


def test_sign_of_a_csv_file_matches_the_lots_submit_would_send(tmp_path, capsys):
    path = write_csv(tmp_path / "lots.csv", [
        {"lot_id": "c-1", "additional_info": "BMW", "image_urls": "http://127.0.0.1/a.jpg|http://127.0.0.1/b.jpg",
         "webhook": "http://127.0.0.1/hook"},
        {"lot_id": "c-2", "additional_info": "", "image_urls": "http://127.0.0.1/c.jpg http://127.0.0.1/d.jpg",
         "webhook": ""},
    ])
    expected = [lot("c-1", ["http://127.0.0.1/a.jpg", "http://127.0.0.1/b.jpg"], "BMW", "http://127.0.0.1/hook"),
                lot("c-2", ["http://127.0.0.1/c.jpg", "http://127.0.0.1/d.jpg"], "")]
    assert run("sign", "--key", TEST_KEY, path) == 0
    assert capsys.readouterr().out.strip() == body_signature(expected)


def test_sign_job_ids_and_raw_strings_with_the_key_from_the_environment(monkeypatch, capsys):
    monkeypatch.setenv("SHARED_KEY", TEST_KEY)
    assert run("sign", "--job-id", "550e8400-e29b-41d4-a716-446655440000") == 0
    assert run("sign", "--string", "status=completed&limit=20") == 0
    job, query = capsys.readouterr().out.split()
    assert job == header_signature("550e8400-e29b-41d4-a716-446655440000")
    assert query == header_signature("status=completed&limit=20")


def test_python_dash_m_runs_the_command():
    done = subprocess.run([sys.executable, "-m", "app.cli", "sign", "--key", TEST_KEY, "--job-id", "abc"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == header_signature("abc")


# ---- usage errors -------------------------------------------------------------------------------

@pytest.mark.parametrize("name, content, complaint", [
    ("broken.json", "{not json", "not valid JSON"),
    ("empty.json", '{"lots": []}', "non-empty list of lots"),
    ("strings.json", '["a", "b"]', "every lot must be an object"),
    ("nocolumn.csv", "lot_id,additional_info\nx,y\n", "image_urls"),
])
def test_unreadable_lots_files_are_usage_errors(tmp_path, capsys, name, content, complaint):
    path = tmp_path / name
    path.write_text(content)
    assert run("submit", path, "--key", TEST_KEY, "--url", "http://127.0.0.1:9") == 2
    assert complaint in capsys.readouterr().err


def test_missing_file_and_missing_key_are_usage_errors(tmp_path, capsys):
    assert run("submit", tmp_path / "absent.json", "--key", TEST_KEY) == 2
    assert "cannot read" in capsys.readouterr().err
    assert run("status", "some-job", "--url", "http://127.0.0.1:9") == 2
    assert "no shared key" in capsys.readouterr().err


def test_out_without_wait_is_refused_for_a_batch(tmp_path, capsys):
    path = write_json(tmp_path / "two.json", [lot("a", ["http://127.0.0.1/a.jpg"]), lot("b", ["http://127.0.0.1/b.jpg"])])
    assert run("submit", path, "--key", TEST_KEY, "--url", "http://127.0.0.1:9", "--out", tmp_path / "r.json") == 2
    assert "--out needs --wait" in capsys.readouterr().err


def test_bad_arguments_exit_2(capsys):
    with pytest.raises(SystemExit) as caught:
        run("jobs", "--status", "sleeping")
    assert caught.value.code == 2


# ---- submit -------------------------------------------------------------------------------------

def test_one_lot_is_answered_at_once_on_stdout(live, image_server, tmp_path, capsys):
    path = write_json(tmp_path / "one.json", [lot("one-1", [image_server.url("/img/a.jpg")])])
    assert run("submit", path, "--url", live.url, "--key", TEST_KEY, "--languages", "en,ru") == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["processing_mode"] == "synchronous"
    assert [d["language"] for d in answer["lots"][0]["descriptions"]] == ["en", "ru"]


def test_batch_without_wait_prints_the_accepted_job(live, image_server, tmp_path, capsys):
    lots = [lot(f"nw-{i}", [image_server.url(f"/img/{i}.jpg")]) for i in range(2)]
    assert run("submit", write_json(tmp_path / "l.json", {"lots": lots}), "--url", live.url, "--key", TEST_KEY) == 0
    accepted = json.loads(capsys.readouterr().out)
    assert accepted["status"] == "accepted" and accepted["total_lots"] == 2


def test_json_batch_waits_with_a_progress_bar_and_writes_json(live, image_server, tmp_path, capsys):
    lots = [lot(f"j-{i}", [image_server.url(f"/img/j{i}.jpg")], f"car {i}") for i in range(3)]
    body = {"version": "1.0.0", "languages": ["en", "de"], "lots": lots}
    out = tmp_path / "results.json"
    code = run("submit", write_json(tmp_path / "body.json", body), "--url", live.url, "--key", TEST_KEY,
               "--wait", "--poll-interval", "0.05", "--out", out)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    bars = [line for line in captured.err.splitlines() if line.startswith("[")]
    assert bars and "100.0%" in bars[-1] and "completed" in bars[-1]
    assert all(len(line.split("]")[0]) == 31 for line in bars)
    document = json.loads(out.read_text(encoding="utf-8"))
    assert document["status"] == "completed"
    assert [l["lot_id"] for l in document["results"]["lots"]] == ["j-0", "j-1", "j-2"]
    assert all([d["language"] for d in l["descriptions"]] == ["en", "de"] for l in document["results"]["lots"])
    assert captured.out == ""


def test_csv_batch_writes_one_row_per_lot_and_language(live, image_server, tmp_path, capsys):
    missing = image_server.url("/missing/c.jpg")
    path = write_csv(tmp_path / "lots.csv", [
        {"lot_id": "csv-1", "additional_info": "Audi A4", "webhook": "",
         "image_urls": f"{image_server.url('/img/a.jpg')}|{image_server.url('/img/b.jpg')}"},
        {"lot_id": "csv-2", "additional_info": "Ford F-150", "webhook": "",
         "image_urls": f"{image_server.url('/img/c.jpg')} {image_server.url('/img/d.jpg')} {missing}"},
    ])
    out = tmp_path / "results.csv"
    code = run("submit", path, "--url", live.url, "--key", TEST_KEY, "--languages", "en,ru", "--wait",
               "--poll-interval", "0.05", "--out", out)
    assert code == 0, capsys.readouterr().err
    with open(out, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == list(cli.CSV_COLUMNS)
    assert [(r["lot_id"], r["language"], r["status"]) for r in rows] == [
        ("csv-1", "en", "completed"), ("csv-1", "ru", "completed"),
        ("csv-2", "en", "completed"), ("csv-2", "ru", "completed")]
    assert all(r["damages"].startswith("<") for r in rows)
    assert [r["missing_images"] for r in rows if r["lot_id"] == "csv-2"] == [missing, missing]
    for row in rows:
        assert row["primary_damage"] and row["no_visible_damage"] in ("true", "false")
        assert (row["findings"] == "") == (row["no_visible_damage"] == "true")


def test_a_failed_job_writes_each_lots_error_and_exits_1(live, image_server, tmp_path, capsys):
    lots = [lot(f"f-{i}", [image_server.url(f"/missing/{i}.jpg")]) for i in range(2)]
    out = tmp_path / "failed.csv"
    code = run("submit", write_json(tmp_path / "bad.json", lots), "--url", live.url, "--key", TEST_KEY,
               "--wait", "--poll-interval", "0.05", "--out", out)
    assert code == 1
    assert "job failed" in capsys.readouterr().err
    with open(out, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["lot_id"], r["status"], r["language"]) for r in rows] == [("f-0", "failed", "en"), ("f-1", "failed", "en")]
    assert all(r["error"] for r in rows)


def test_a_wrong_key_exits_1_with_the_json_error(live, image_server, tmp_path, capsys):
    path = write_json(tmp_path / "one.json", [lot("wk-1", [image_server.url("/img/a.jpg")])])
    assert run("submit", path, "--url", live.url, "--key", WRONG_KEY) == 1
    captured = capsys.readouterr()
    error = json.loads(captured.err)
    assert error["status"] == 403 and error["code"] == "INVALID_SIGNATURE"
    assert captured.out == ""


def test_an_unreachable_service_exits_1(tmp_path, capsys):
    assert run("status", "job", "--key", TEST_KEY, "--url", f"http://127.0.0.1:{free_port()}", "--timeout", "2") == 1
    assert "cannot reach" in capsys.readouterr().err


# ---- clients ------------------------------------------------------------------------------------

@pytest.fixture
def managed(live, monkeypatch):
    """The live server's database and shared key, where `genservice clients` finds them."""
    monkeypatch.setenv("DATABASE_URL", live.app.extensions["genservice"].settings.database_url)
    monkeypatch.setenv("SHARED_KEY", TEST_KEY)
    return live


def clients_cmd(capsys, *argv: str) -> tuple[int, str, str]:
    code = run("clients", *argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def added(capsys, client_id: str, *options: str) -> dict:
    code, out, _err = clients_cmd(capsys, "add", client_id, "--json", *options)
    assert code == 0
    return json.loads(out)


def gs2_client(url: str, issued: dict) -> GenerationClient:
    return GenerationClient(base_url=url, client_id=issued["client_id"], key_id=issued["key_id"],
                            secret=issued["secret"], timeout=30)


def test_clients_add_prints_a_working_key_once_and_list_never_shows_it(managed, capsys):
    code, out, err = clients_cmd(capsys, "add", "auction-a", "--name", "Auction A", "--rate-limit-sync", "50/minute",
                                 "--max-queued-lots", "1000")
    assert code == 0 and "shown only now" in err
    fields = dict(line.strip().split(":", 1) for line in out.splitlines()[1:])
    key_id, secret, webhook = (fields[name].strip() for name in ("key id", "key secret", "webhook secret"))
    assert key_id.startswith("key_") and secret.startswith("gsk_") and webhook.startswith("whsec_")
    client = GenerationClient(base_url=managed.url, client_id="auction-a", key_id=key_id, secret=secret)
    assert client.list_jobs()["jobs"] == []

    code, out, _ = clients_cmd(capsys, "list", "--json")
    listed = {c["id"]: c for c in json.loads(out)}
    assert list(listed) == ["default", "auction-a"], "the implicit client of SHARED_KEY comes first"
    mine = listed["auction-a"]
    assert (mine["name"], mine["enabled"], mine["schemes"]) == ("Auction A", True, ["GS2-HMAC-SHA256"])
    assert mine["keys"] == [{"key_id": key_id, "expires_at": None}]
    assert mine["limits"] == {"rate_limit_sync": "50/minute", "rate_limit_batch": None, "rate_limit_polling": None,
                              "max_queued_lots": 1000, "max_daily_cost_usd": None}
    assert "webhook_secret" not in mine
    assert listed["default"]["keys"][0]["key_id"] == implicit_key_id(TEST_KEY)
    assert listed["default"]["schemes"] == ["GS2-HMAC-SHA256", "X-Signature"]
    code, text_listing, _ = clients_cmd(capsys, "list")
    assert code == 0 and key_id in text_listing and "rate_limit_sync=50/minute" in text_listing
    assert secret not in text_listing and webhook not in text_listing

    code, out, _ = clients_cmd(capsys, "list", "--json", "--show-secrets")
    shown = {c["id"]: c for c in json.loads(out)}
    assert shown["auction-a"]["webhook_secret"] == webhook
    assert secret not in out, "a key's secret is printed once, when it is made"
    code, out, _ = clients_cmd(capsys, "list", "--show-secrets")
    assert f"webhook secret: {webhook}" in out


def test_clients_list_has_no_implicit_client_without_shared_key(managed, capsys, monkeypatch):
    added(capsys, "only-one")
    monkeypatch.delenv("SHARED_KEY")
    code, out, _ = clients_cmd(capsys, "list", "--json")
    assert [c["id"] for c in json.loads(out)] == ["only-one"]


def test_rotate_webhook_secret_prints_the_new_secret_and_list_shows_it(managed, capsys):
    first = added(capsys, "hooked")
    code, out, _ = clients_cmd(capsys, "rotate-webhook-secret", "hooked", "--grace", "1h", "--json")
    assert code == 0
    rotated = json.loads(out)
    assert rotated["webhook_secret"].startswith("whsec_") and rotated["webhook_secret"] != first["webhook_secret"]
    assert rotated["previous_secret_signs_for_seconds"] == 3600
    listed = {c["id"]: c for c in json.loads(clients_cmd(capsys, "list", "--json", "--show-secrets")[1])}
    assert listed["hooked"]["webhook_secret"] == rotated["webhook_secret"]
    code, out, err = clients_cmd(capsys, "rotate-webhook-secret", "default")
    assert code == 1 and json.loads(err)["code"] == "VALIDATION_ERROR" and "WEBHOOK_SECRET" in json.loads(err)["message"]


def test_clients_disable_refuses_every_request_until_enabled(managed, capsys):
    client = gs2_client(managed.url, added(capsys, "pausable"))
    assert clients_cmd(capsys, "disable", "pausable")[:2] == (0, "client pausable disabled\n")
    with pytest.raises(ApiError) as refused:
        client.list_jobs()
    assert (refused.value.status, refused.value.code) == (403, "CLIENT_DISABLED")
    code, out, _ = clients_cmd(capsys, "list", "--json")
    assert [c["enabled"] for c in json.loads(out) if c["id"] == "pausable"] == [False]
    assert clients_cmd(capsys, "enable", "pausable")[0] == 0
    assert client.list_jobs()["pagination"]["total"] == 0


def test_clients_set_changes_only_what_it_is_given_and_default_clears_a_limit(managed, capsys):
    added(capsys, "tuned", "--name", "Tuned", "--max-queued-lots", "500", "--rate-limit-batch", "3/minute")
    code, out, _ = clients_cmd(capsys, "set", "tuned", "--max-queued-lots", "default", "--max-daily-cost-usd", "12.5",
                               "--reference-scheme", "--json")
    assert code == 0
    changed = json.loads(out)
    assert changed["limits"] == {"rate_limit_sync": None, "rate_limit_batch": "3/minute", "rate_limit_polling": None,
                                 "max_queued_lots": None, "max_daily_cost_usd": 12.5}
    assert (changed["name"], changed["reference_scheme"]) == ("Tuned", True)
    code, out, _ = clients_cmd(capsys, "set", "tuned", "--no-reference-scheme", "--name", "Renamed")
    assert code == 0 and "reference_scheme=False" in out
    listed = {c["id"]: c for c in json.loads(clients_cmd(capsys, "list", "--json")[1])}
    assert (listed["tuned"]["name"], listed["tuned"]["schemes"]) == ("Renamed", ["GS2-HMAC-SHA256"])
    assert listed["tuned"]["limits"]["max_daily_cost_usd"] == 12.5
    assert clients_cmd(capsys, "set", "tuned")[0] == 2, "nothing to change"


def test_a_client_added_with_the_reference_scheme_signs_either_way(managed, capsys, image_server):
    issued = added(capsys, "legacy", "--reference-scheme")
    reference = GenerationClient(base_url=managed.url, client_id="legacy", key_id=issued["key_id"],
                                 secret=issued["secret"], scheme=REFERENCE)
    job = reference.create_batch([lot(f"lg-{i}", [image_server.url("/img/a.jpg")]) for i in range(2)])
    assert gs2_client(managed.url, issued).status(job["job_id"])["job_id"] == job["job_id"]


@pytest.mark.parametrize("argv, complaint", [
    (["add", "Upper"], "VALIDATION_ERROR"),
    (["add", "default"], "VALIDATION_ERROR"),
    (["rotate-key", "nobody"], "CLIENT_NOT_FOUND"),
    (["disable", "nobody"], "CLIENT_NOT_FOUND"),
    (["set", "nobody", "--name", "x"], "CLIENT_NOT_FOUND"),
])
def test_clients_refused_by_the_service_exit_1_with_the_json_error(managed, capsys, argv, complaint):
    code, out, err = clients_cmd(capsys, *argv)
    assert (code, out, json.loads(err)["code"]) == (1, "", complaint)


@pytest.mark.parametrize("argv, complaint", [
    (["add", "x", "--rate-limit-sync", "lots"], "expected a rate"),
    (["add", "x", "--max-queued-lots", "0"], "at least 1"),
    (["add", "x", "--max-daily-cost-usd", "-1"], "0 or more"),
    (["rotate-key", "x", "--grace", "soon"], "expected a duration"),
    (["set", "x", "--rate-limit-polling", "often"], "expected a rate"),
    (["remove", "x"], "invalid choice"),
])
def test_clients_bad_arguments_exit_2(managed, capsys, argv, complaint):
    with pytest.raises(SystemExit) as usage:
        run("clients", *argv)
    assert usage.value.code == 2 and complaint in capsys.readouterr().err


def test_clients_commands_name_a_bad_setting_or_an_unreachable_database(capsys, monkeypatch):
    monkeypatch.setenv("RATE_LIMIT_SYNC", "bogus")
    assert run("clients", "list") == 2
    assert "RATE_LIMIT_SYNC" in capsys.readouterr().err
    monkeypatch.delenv("RATE_LIMIT_SYNC")
    monkeypatch.setenv("DATABASE_URL", f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere")
    assert run("clients", "list") == 1
    assert "cannot open the database" in capsys.readouterr().err


def test_adding_an_existing_client_is_refused_and_keeps_its_key(managed, capsys):
    first = added(capsys, "twice")
    code, out, err = clients_cmd(capsys, "add", "twice", "--json")
    assert (code, out, json.loads(err)["code"]) == (1, "", "CLIENT_EXISTS")
    assert gs2_client(managed.url, first).list_jobs()["jobs"] == []


def test_api_commands_sign_as_the_client_named_in_the_environment(managed, capsys, monkeypatch, image_server,
                                                                  tmp_path):
    issued = added(capsys, "env-client")
    monkeypatch.delenv("SHARED_KEY")
    monkeypatch.setenv("GENSERVICE_URL", managed.url)
    monkeypatch.setenv("GENSERVICE_CLIENT_ID", "env-client")
    monkeypatch.setenv("GENSERVICE_KEY_ID", issued["key_id"])
    monkeypatch.setenv("GENSERVICE_KEY", issued["secret"])
    lots = write_json(tmp_path / "l.json", [lot(f"env-{i}", [image_server.url("/img/a.jpg")]) for i in range(2)])
    assert run("submit", lots) == 0
    job_id = json.loads(capsys.readouterr().out)["job_id"]
    assert run("jobs") == 0
    assert [j["id"] for j in json.loads(capsys.readouterr().out)["jobs"]] == [job_id]
    # the same job is another client's for the implicit client, whichever scheme it signs with
    for scheme in ([], ["--reference-signature"]):
        assert run("status", job_id, "--client-id", "default", "--key", TEST_KEY, *scheme) == 1
        assert json.loads(capsys.readouterr().err)["code"] == "JOB_NOT_FOUND"
    monkeypatch.delenv("GENSERVICE_KEY_ID")
    assert run("status", job_id) == 2
    assert "--key-id" in capsys.readouterr().err


def test_sign_gs2_prints_an_authorization_good_for_one_request(managed, capsys, image_server, tmp_path):
    issued = added(capsys, "curl-user")
    credentials = ("--client-id", "curl-user", "--key-id", issued["key_id"], "--key", issued["secret"])
    body = json.dumps({"version": "1.0.0", "languages": ["en"], "lots": [
        lot(f"curl-{i}", [image_server.url("/img/a.jpg")], "Лада \u007f") for i in range(2)]}, ensure_ascii=False)
    (tmp_path / "body.json").write_bytes(body.encode())
    assert run("sign", "--gs2", "post", "/api/v1/generate-descriptions", "--body", tmp_path / "body.json",
               *credentials) == 0
    auth = capsys.readouterr().out.strip()
    created = requests.post(f"{managed.url}/api/v1/generate-descriptions", data=body.encode(), timeout=30,
                            headers={"Authorization": auth, "Content-Type": "application/json"})
    assert created.status_code == 201, created.text
    target = "/api/v1/batch-jobs?limit=5&offset=0"
    assert run("sign", "--gs2", "GET", target, *credentials) == 0
    auth = capsys.readouterr().out.strip()
    listed = requests.get(managed.url + target, headers={"Authorization": auth}, timeout=30)
    assert [j["id"] for j in listed.json()["jobs"]] == [created.json()["job_id"]]
    again = requests.get(managed.url + target, headers={"Authorization": auth}, timeout=30)
    assert (again.status_code, again.json()["code"]) == (403, "SIGNATURE_REPLAYED")
    assert run("sign", "--gs2", "GET", "api/v1/batch-jobs", *credentials) == 2


@pytest.mark.parametrize("engine_name", ["postgresql", "sqlite"])
def test_a_key_rotated_while_requests_keep_coming_loses_none_of_them(managed, capsys, image_server):
    """A poller keeps calling with the client's current key; rotate-key runs in the middle. Not one request
    is refused, the old key works through the grace and is refused after it."""
    old_key = added(capsys, "rotating")
    old = gs2_client(managed.url, old_key)
    job_id = old.create_batch([lot(f"rot-{i}", [image_server.url("/img/a.jpg")]) for i in range(2)])["job_id"]
    current = {"client": gs2_client(managed.url, old_key), "key_id": old_key["key_id"]}
    sent: list[tuple[str, int]] = []  # (key id, status) of every poll
    failures: list[BaseException] = []
    stop = threading.Event()

    def poll():
        deadline = time.monotonic() + 120
        while not stop.is_set() and time.monotonic() < deadline and len(sent) < 5000:
            client, key_id = current["client"], current["key_id"]
            try:
                status = client.status(job_id)
                sent.append((key_id, 200 if status["job_id"] == job_id else -1))
            except ApiError as error:
                sent.append((key_id, error.status))
            except Exception as error:  # a lost request counts as much as a refused one
                failures.append(error)
                sent.append((key_id, 0))

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    wait_until(lambda: len(sent) >= 20, 60, "20 polls with the first key")
    code, out, _ = clients_cmd(capsys, "rotate-key", "rotating", "--grace", "4s", "--json")
    assert code == 0
    new_key = json.loads(out)
    assert new_key["key_id"] != old_key["key_id"]
    assert [k["key_id"] for k in new_key["other_keys"]] == [old_key["key_id"]]
    before_switch = len(sent)
    current["client"], current["key_id"] = gs2_client(managed.url, new_key), new_key["key_id"]
    # inside the grace the old key is still accepted
    assert old.status(job_id)["job_id"] == job_id
    wait_until(lambda: sum(1 for key, _ in sent[before_switch:] if key == new_key["key_id"]) >= 20, 60,
               "20 polls with the new key")

    def old_key_refused():
        try:
            old.status(job_id)
        except ApiError as error:
            return error
        return None

    refused = wait_until(old_key_refused, 60, "the old key to expire", interval=0.25)
    stop.set()
    poller.join(30)
    assert (refused.status, refused.code) == (403, "INVALID_SIGNATURE")
    assert not failures, failures
    assert {status for _key, status in sent} == {200}, [s for s in sent if s[1] != 200][:5]
    assert {key for key, _ in sent} == {old_key["key_id"], new_key["key_id"]}
    assert gs2_client(managed.url, new_key).status(job_id)["job_id"] == job_id
    listed = {c["id"]: c for c in json.loads(clients_cmd(capsys, "list", "--json")[1])}
    assert [k["key_id"] for k in listed["rotating"]["keys"]] == [new_key["key_id"]]


# ---- job commands -------------------------------------------------------------------------------

def test_job_commands_list_show_read_and_cancel(make_live, image_server, tmp_path, capsys, monkeypatch):
    live = make_live(WORKER_ENABLED="false")
    instance = tmp_path / "instance"
    instance.mkdir()
    (instance / "dev_shared_key").write_text(TEST_KEY + "\n")
    monkeypatch.setenv("INSTANCE_PATH", str(instance))  # the key `python main.py` would have made
    monkeypatch.setenv("GENSERVICE_URL", live.url)
    lots = [lot(f"jc-{i}", [image_server.url(f"/img/{i}.jpg")]) for i in range(2)]
    assert run("submit", write_json(tmp_path / "l.json", lots)) == 0
    job_id = json.loads(capsys.readouterr().out)["job_id"]

    assert run("status", job_id) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "pending"
    assert run("results", job_id) == 1
    assert "no results yet" in capsys.readouterr().err
    assert run("jobs", "--status", "pending", "--limit", "5", "--created-after", "2000-01-01T00:00:00+00:00") == 0
    assert [j["id"] for j in json.loads(capsys.readouterr().out)["jobs"]] == [job_id]
    assert run("cancel", job_id) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "cancelled"
    assert run("cancel", job_id) == 1
    assert json.loads(capsys.readouterr().err)["code"] == "JOB_NOT_CANCELLABLE"
    assert run("results", job_id) == 1, "a cancelled job has no results, only its lots' reasons"
    captured = capsys.readouterr()
    assert "job cancelled" in captured.err
    assert {l["status"] for l in json.loads(captured.out)["results"]["lots"]} == {"failed"}


def test_results_command_writes_json_and_csv(live, image_server, tmp_path, capsys):
    api = Api(live.url)
    job_id = api.generate([lot(f"rc-{i}", [image_server.url(f"/img/{i}.jpg")]) for i in range(2)],
                          languages=["en", "fr"]).json()["job_id"]
    api.wait_status(job_id)
    assert run("results", job_id, "--url", live.url, "--key", TEST_KEY, "--out", tmp_path / "r.json") == 0
    assert json.loads((tmp_path / "r.json").read_text())["results"]["lots"][1]["lot_id"] == "rc-1"
    assert run("results", job_id, "--url", live.url, "--key", TEST_KEY, "--out", tmp_path / "r.csv") == 0
    with open(tmp_path / "r.csv", newline="", encoding="utf-8") as fh:
        assert len(list(csv.DictReader(fh))) == 4
    assert run("results", job_id, "--url", live.url, "--key", TEST_KEY) == 0
    assert json.loads(capsys.readouterr().out)["job_id"] == job_id


def test_deliveries_and_redeliver_commands(live, image_server, receiver, capsys):
    api = Api(live.url)
    job_id = api.generate([lot(f"dv-{i}", [image_server.url(f"/img/{i}.jpg")], webhook=receiver.url())
                           for i in range(2)]).json()["job_id"]
    api.wait_status(job_id)
    receiver.wait_for(1)
    common = ("--url", live.url, "--key", TEST_KEY)

    def delivered() -> list[dict] | None:
        assert run("deliveries", job_id, *common) == 0
        listed = json.loads(capsys.readouterr().out)["deliveries"]
        return listed if listed and listed[0]["status"] == "delivered" else None

    deliveries = wait_until(delivered, 20, "the first delivery to be delivered")
    assert run("redeliver", deliveries[0]["id"], *common) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "pending"
    receiver.wait_for(2)


# ---- server commands ----------------------------------------------------------------------------

def test_gunicorn_command_line_without_a_config_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli, "PROJECT_ROOT", tmp_path)
    args = cli.build_parser().parse_args(["serve", "--host", "::1", "--port", "8123", "--workers", "2"])
    argv = cli.gunicorn_argv(args)
    assert argv[1:3] == ["-m", "gunicorn"] and "-c" not in argv
    assert argv[argv.index("--worker-class") + 1] == "gthread"
    assert argv[argv.index("--bind") + 1] == "[::1]:8123"
    assert argv[argv.index("--workers") + 1] == "2" and argv[-1] == "app:create_app()"


@pytest.mark.parametrize("engine_name", ["postgresql", "sqlite"])
def test_worker_command_finishes_jobs_and_stops_on_sigterm(make_live, database_url, sandbox, image_server, tmp_path):
    api = Api(make_live(WORKER_ENABLED="false").url)
    job_id = api.generate([lot(f"w-{i}", [image_server.url(f"/img/{i}.jpg")]) for i in range(2)]).json()["job_id"]
    env = service_env(database_url, sandbox.url, tmp_path / "worker")
    # the worker process runs without HTTP: Flask and the web modules cannot even be imported in it
    worker = subprocess.Popen([sys.executable, "-I", str(ROOT / "tests" / "support" / "blocked.py"), WEB_SIDE,
                               "-m", "genclient.cli", "worker"], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    output = Lines(worker.stderr)
    try:
        output.wait_for("stop with SIGTERM")
        assert api.wait_status(job_id, timeout=60)["status"] == "completed"
        assert heartbeats_of(database_url, worker.pid) == 1
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
        output.reader.join(10)
    finally:
        code = stop(worker)
    assert code == 0, "".join(output.lines)
    assert not [line for line in output.lines if BLOCKED in line], "".join(output.lines)
    assert heartbeats_of(database_url, worker.pid) == 0, "a clean stop removes the worker's heartbeat"


def test_serve_runs_gunicorn_with_its_config(sandbox, tmp_path):
    port = free_port()
    env = service_env(f"sqlite:///{tmp_path / 'serve.db'}", sandbox.url, tmp_path)
    server = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
                               "--workers", "1"], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    try:
        health = wait_for_health(f"http://127.0.0.1:{port}", server)
        assert health.headers["Server"].startswith("gunicorn")
        assert health.json()["background_worker"] == "running"
    finally:
        code = stop(server)
    assert code == 0


def test_serve_dev_runs_the_flask_server_with_the_development_key(sandbox, tmp_path):
    port = free_port()
    env = service_env(f"sqlite:///{tmp_path / 'dev.db'}", sandbox.url, tmp_path, TESTING="false")
    del env["SHARED_KEY"]
    server = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--dev", "--port", str(port)],
                              cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    try:
        health = wait_for_health(f"http://127.0.0.1:{port}", server)
        assert health.headers["Server"].startswith("Werkzeug")
        key = (tmp_path / "instance" / "dev_shared_key").read_text().strip()
        assert Api(f"http://127.0.0.1:{port}", key).status("no-such-job").status_code == 404
    finally:
        code = stop(server)
    assert code == 0


def test_sandbox_command_passes_its_options_to_the_sandbox(tmp_path):
    port = free_port()
    sandbox = subprocess.Popen([sys.executable, "-m", "app.cli", "sandbox", "--port", str(port),
                                "--batch-outcome", "expired"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert f"http://127.0.0.1:{port}/v1" in sandbox.stdout.readline()
        token = sandbox.stdout.readline().rsplit(" ", 1)[-1].strip()
        url = f"http://127.0.0.1:{port}/sandbox/config"
        assert requests.get(url, timeout=10).status_code == 401
        config = requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=10).json()
        assert config["batch_outcome"] == "expired"
    finally:
        code = stop(sandbox)
    assert code == 0


def test_sandbox_command_takes_its_control_token_from_the_environment():
    port = free_port()
    env = dict(os.environ, SANDBOX_CONTROL_TOKEN="cli-given-token-0123456789")
    sandbox = subprocess.Popen([sys.executable, "-m", "app.cli", "sandbox", "--port", str(port)], cwd=ROOT,
                               env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert f":{port}" in sandbox.stdout.readline()
        url = f"http://127.0.0.1:{port}/sandbox/stats"
        assert requests.get(url, headers={"X-Sandbox-Token": "wrong"}, timeout=10).status_code == 401
        assert requests.get(url, headers={"X-Sandbox-Token": "cli-given-token-0123456789"},
                            timeout=10).status_code == 200
        sandbox.send_signal(signal.SIGTERM)
        assert "cli-given-token" not in sandbox.stdout.read()  # a token it was given is never printed
    finally:
        code = stop(sandbox)
    assert code == 0
