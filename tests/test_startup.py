"""The developer's first run: `python main.py` with no environment answers /health on SQLite and the sandbox."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import requests

from tests.support.common import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_main_without_a_key_or_the_sandbox_flag_refuses_to_start(tmp_path):
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": ROOT, "PORT": str(free_port())}
    done = subprocess.run([sys.executable, os.path.join(ROOT, "main.py")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "OPENAI_SANDBOX" in done.stderr and "OPENAI_API_KEY" in done.stderr


def test_main_runs_with_no_environment_but_the_sandbox_flag(tmp_path):
    """What `make run` does: nothing configured but OPENAI_SANDBOX=true."""
    port = free_port()
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": ROOT, "PORT": str(port), "OPENAI_SANDBOX": "true"}
    process = subprocess.Popen([sys.executable, os.path.join(ROOT, "main.py")], cwd=tmp_path, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                answer = requests.get(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except requests.ConnectionError:
                assert process.poll() is None, process.stdout.read().decode()
                assert time.monotonic() < deadline, "no answer within 60 s"
                time.sleep(0.2)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["database_engine"] == "sqlite" and body["openai"]["mode"] == "sandbox (in-process)"
        assert (tmp_path / "instance" / "dev_shared_key").exists()
    finally:
        process.terminate()
        process.wait(10)
        process.stdout.close()
