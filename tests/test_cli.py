"""The genservice command: signing, submitting JSON and CSV, waiting, the job commands, and the servers."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import requests
from sqlalchemy import func, select

from app import cli
from database import Database, normalize_url
from database.models import WorkerHeartbeat
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
    for name in ("SHARED_KEY", "SHARED_KEYS", "GENSERVICE_URL"):
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
