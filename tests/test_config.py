"""Settings are read once from the environment; a bad value stops start-up and names its variable."""
from __future__ import annotations

import io
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from app.config import ConfigError, Settings, development_settings
from app.runtime import start_sandbox
from database import normalize_url
from services.metrics import Metrics
from tests.support.processes import ProcessSet, minimal_env, start_gunicorn

ROOT = Path(__file__).resolve().parent.parent

KEY = "k" * 32
# the built-in sandbox must be asked for; every test here that needs no key asks for it
SANDBOX = {"OPENAI_SANDBOX": "true"}


@pytest.mark.parametrize("name,value", [
    ("MAX_BATCH_SIZE", "lots"), ("WEBHOOK_TIMEOUT", "-1"), ("BATCH_STRATEGY", "fastest"),
    ("ALLOW_PRIVATE_URLS", "maybe"), ("LOG_LEVEL", "loud"), ("RATE_LIMIT_SYNC", "100 per fortnight"),
    ("OUTBOUND_ALLOWED_HOSTS", "10.0.0.0/99"), ("DATABASE_URL", "mysql://x/y"), ("PORT", "70000"),
])
def test_invalid_values_name_the_variable(name, value):
    with pytest.raises(ConfigError) as error:
        Settings.from_env({"SHARED_KEY": KEY, **SANDBOX, name: value})
    assert name in str(error.value)


@pytest.mark.parametrize("name", ["WEBHOOK_SECRET", "WEBHOOK_SECRETS"])
@pytest.mark.parametrize("value", [KEY, "whsec_" + "c2hvcnQ=", "whsec_not*base64*at*all*but*long*enough"])
def test_a_webhook_secret_must_be_whsec_form_and_is_never_repeated_in_the_message(name, value):
    with pytest.raises(ConfigError, match=name) as error:
        Settings.from_env({"SHARED_KEY": KEY, **SANDBOX, name: value})
    assert value not in str(error.value) and value.removeprefix("whsec_") not in str(error.value)
    good = "whsec_" + "A" * 32
    assert Settings.from_env({"SHARED_KEY": KEY, **SANDBOX, name: good})


def test_short_shared_key_is_refused_outside_debug():
    with pytest.raises(ConfigError, match="SHARED_KEY"):
        Settings.from_env({"SHARED_KEY": "short", **SANDBOX})
    assert Settings.from_env({"SHARED_KEY": "short", "DEBUG": "true", **SANDBOX}).shared_key == "short"


def test_missing_shared_key_is_refused():
    with pytest.raises(ConfigError, match="SHARED_KEY"):
        Settings.from_env({})


def test_defaults_follow_the_spec():
    s = Settings.from_env({"SHARED_KEY": KEY, **SANDBOX})
    assert (s.max_batch_size, s.webhook_timeout, s.webhook_max_retries, s.worker_poll_interval) == (50000, 30, 5, 30)
    # the reference's o4-mini was shut down on 2026-10-23: the defaults are models OpenAI serves today
    assert (s.openai_model_vision, s.openai_model_translation) == ("gpt-6.1-terra", "gpt-6-luna")
    assert (s.openai_reasoning_effort, s.openai_translation_reasoning_effort) == ("medium", "none")
    assert (s.rate_limit_sync, s.rate_limit_batch, s.rate_limit_polling) == ("100/minute", "10/minute", "1000/minute")
    assert s.uses_sandbox


def test_shared_keys_rotation_list():
    s = Settings.from_env({"SHARED_KEY": KEY, **SANDBOX, "SHARED_KEYS": f"{'o' * 32}, {KEY}"})
    assert s.shared_keys == (KEY, "o" * 32)


def test_spec_database_url_maps_to_psycopg3(tmp_path):
    assert normalize_url("postgresql://user:password@host:5432/db", str(tmp_path)) == \
        "postgresql+psycopg://user:password@host:5432/db"
    assert normalize_url(None, str(tmp_path)).startswith("sqlite:///")


def test_a_start_without_an_openai_key_is_refused_unless_the_sandbox_is_asked_for():
    with pytest.raises(ConfigError, match="OPENAI_SANDBOX"):
        Settings.from_env({"SHARED_KEY": KEY})
    assert Settings.from_env({"SHARED_KEY": KEY, "OPENAI_API_KEY": "sk-test"}).uses_sandbox is False
    assert Settings.from_env({"SHARED_KEY": KEY, **SANDBOX}).uses_sandbox is True


def test_the_reference_models_stay_valid_settings():
    s = Settings.from_env({"SHARED_KEY": KEY, **SANDBOX, "OPENAI_MODEL_VISION": "o4-mini",
                           "OPENAI_MODEL_TRANSLATION": "gpt-4.1-mini"})
    assert (s.openai_model_vision, s.openai_model_translation) == ("o4-mini", "gpt-4.1-mini")


@pytest.mark.parametrize("effort", ["none", "low", "medium", "high", "xhigh", "max"])
def test_every_effort_of_todays_models_is_accepted(effort):
    s = Settings.from_env({"SHARED_KEY": KEY, **SANDBOX, "OPENAI_REASONING_EFFORT": effort,
                           "OPENAI_TRANSLATION_REASONING_EFFORT": effort})
    assert s.openai_reasoning_effort == effort


@pytest.mark.parametrize("env,name", [
    ({"OPENAI_MODEL_VISION": "gpt-6.2-astra", "OPENAI_REASONING_EFFORT": "none"}, "OPENAI_REASONING_EFFORT"),
    ({"OPENAI_MODEL_TRANSLATION": "gpt-6.2-sol"}, "OPENAI_TRANSLATION_REASONING_EFFORT"),
    ({"OPENAI_REASONING_EFFORT": "minimal"}, "OPENAI_REASONING_EFFORT"),
    ({"OPENAI_REASONING_EFFORT": "extreme"}, "OPENAI_REASONING_EFFORT"),
    ({"MAX_DAILY_COST_USD": "-5"}, "MAX_DAILY_COST_USD"),
])
def test_an_effort_the_model_does_not_take_stops_start_up(env, name):
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({"SHARED_KEY": KEY, **SANDBOX, **env})


# ---- how one variable's text becomes a value ----------------------------------------------------------

@pytest.mark.parametrize("text,value", [("true", True), ("1", True), ("YES", True), (" on ", True),
                                        ("false", False), ("0", False), ("no", False), ("Off", False)])
def test_flags_take_the_usual_words(text, value):
    assert Settings.from_env({"SHARED_KEY": KEY, **SANDBOX, "ALLOW_PRIVATE_URLS": text}).allow_private_urls is value


def test_a_blank_variable_is_unset_and_a_blank_flag_is_false():
    s = Settings.from_env({"SHARED_KEY": KEY, **SANDBOX, "OPENAI_MODEL_VISION": "  ", "MAX_BATCH_SIZE": "",
                           "OPENAI_BASE_URL": "", "WORKER_ENABLED": "", "LOG_LEVEL": " "})
    assert (s.openai_model_vision, s.max_batch_size, s.openai_base_url, s.log_level) == \
        ("gpt-6.1-terra", 50000, None, "INFO")
    assert s.worker_enabled is False


def test_values_are_trimmed_and_choices_ignore_case():
    s = Settings.from_env({"SHARED_KEY": f" {KEY} ", **SANDBOX, "LOG_LEVEL": "debug", "BATCH_STRATEGY": " Auto ",
                           "OUTBOUND_ALLOWED_HOSTS": "LocalHost, 127.0.0.0/8,", "MAX_DAILY_COST_USD": "0"})
    assert (s.shared_key, s.log_level, s.batch_strategy) == (KEY, "DEBUG", "auto")
    assert s.outbound_allowed_hosts == ("localhost", "127.0.0.0/8") and s.max_daily_cost_usd is None


@pytest.mark.parametrize("name", ["DEBUG", "FLASK_DEBUG", "TESTING"])
def test_either_debug_variable_or_testing_allows_a_short_key(name):
    assert Settings.from_env({"SHARED_KEY": "short", **SANDBOX, "DEBUG": "false", name: "true"}).shared_key == "short"


@pytest.mark.parametrize("name,value", [("GUNICORN_WORKERS", "0"), ("GUNICORN_THREADS", "many"),
                                        ("SANDBOX_BATCH_SECONDS", "-1"), ("TRUSTED_PROXY_HOPS", "9")])
def test_deployment_and_sandbox_settings_are_checked_too(name, value):
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({"SHARED_KEY": KEY, **SANDBOX, name: value})


def test_the_instance_folder_is_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert Settings.from_env({"SHARED_KEY": KEY, **SANDBOX}).instance_path == str(tmp_path / "instance")
    assert Settings.from_env({"SHARED_KEY": KEY, **SANDBOX, "INSTANCE_PATH": "var/x"}).instance_path == \
        str(tmp_path / "var" / "x")


def test_replace_changes_only_what_it_is_given():
    s = Settings.from_env({"SHARED_KEY": KEY, **SANDBOX})
    changed = s.replace(max_batch_size=7)
    assert (changed.max_batch_size, s.max_batch_size, changed.shared_key) == (7, 50000, KEY)


# ---- gunicorn's address ---------------------------------------------------------------------------------

def test_gunicorn_listens_on_all_addresses_unless_host_is_set():
    assert Settings.from_env({"SHARED_KEY": KEY, **SANDBOX}).listen_address() == "0.0.0.0:5000"
    given = Settings.from_env({"SHARED_KEY": KEY, **SANDBOX, "HOST": "::1", "PORT": "8123"})
    assert given.listen_address() == "[::1]:8123"
    assert given.listen_address("127.0.0.1") == "127.0.0.1:8123" and given.listen_address(None, 9) == "[::1]:9"


def _gunicorn_conf(monkeypatch, **env):
    for name in list(os.environ):
        if name.startswith(("GUNICORN_", "HOST", "PORT", "SHARED_KEY", "OPENAI_")):
            monkeypatch.delenv(name)
    for name, value in {"SHARED_KEY": KEY, **SANDBOX, **env}.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(ROOT / "gunicorn.conf.py"))


def test_gunicorn_conf_takes_its_values_from_the_settings(monkeypatch, tmp_path):
    conf = _gunicorn_conf(monkeypatch, GUNICORN_WORKERS="3", GUNICORN_THREADS="5", HOST="127.0.0.1", PORT="8124",
                          GUNICORN_CONTROL_SOCKET=str(tmp_path / "g.ctl"))
    assert (conf["bind"], conf["workers"], conf["threads"], conf["control_socket"]) == \
        ("127.0.0.1:8124", 3, 5, str(tmp_path / "g.ctl"))
    conf = _gunicorn_conf(monkeypatch, GUNICORN_BIND="127.0.0.1:0")
    assert conf["bind"] == "127.0.0.1:0" and conf["threads"] == 8 and 1 <= conf["workers"] <= 4
    assert conf["control_socket"].endswith("genservice-gunicorn-127.0.0.1-0.ctl")


def test_gunicorn_stops_on_a_bad_setting_naming_the_variable(tmp_path):
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), "SHARED_KEY": KEY, **SANDBOX,
           "GUNICORN_WORKERS": "lots"}
    done = subprocess.run([str(Path(sys.executable).parent / "gunicorn"), "-c", str(ROOT / "gunicorn.conf.py"),
                           "--check-config", "main:app"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode != 0
    assert "configuration error: GUNICORN_WORKERS" in done.stderr and "Traceback" not in done.stderr


# ---- the development key and the sandbox, each made in one place -------------------------------------

def test_the_development_key_is_made_once_and_then_reused(tmp_path):
    env = {**SANDBOX, "INSTANCE_PATH": str(tmp_path / "inst")}
    out = io.StringIO()
    first = development_settings(env, out)
    assert len(first.shared_key) >= 32 and "dev_shared_key" in out.getvalue()
    assert (tmp_path / "inst" / "dev_shared_key").read_text() == first.shared_key
    assert oct((tmp_path / "inst" / "dev_shared_key").stat().st_mode & 0o777) == "0o600"
    assert development_settings(env, io.StringIO()).shared_key == first.shared_key


def test_a_given_key_makes_no_development_key(tmp_path):
    out = io.StringIO()
    s = development_settings({**SANDBOX, "SHARED_KEY": KEY, "INSTANCE_PATH": str(tmp_path)}, out)
    assert s.shared_key == KEY and out.getvalue() == "" and not (tmp_path / "dev_shared_key").exists()
    with pytest.raises(ConfigError, match="OPENAI_SANDBOX"):
        development_settings({"INSTANCE_PATH": str(tmp_path)}, out)


def test_the_sandbox_is_started_as_the_settings_shape_it():
    settings = Settings.from_env({"SHARED_KEY": KEY, **SANDBOX, "SANDBOX_BATCH_SECONDS": "10",
                                  "SANDBOX_TEXT_LATENCY": "0.25"})
    sandbox = start_sandbox(settings)
    try:
        assert sandbox.url.startswith("http://127.0.0.1:")
        config = sandbox.config
        assert (config.batch_validating_seconds, config.batch_in_progress_seconds, config.batch_finalizing_seconds,
                config.text_latency) == (2, 6, 2, 0.25)
    finally:
        sandbox.stop()


def test_metrics_sum_the_folder_the_settings_name(tmp_path):
    assert b"generation_requests_total" in Metrics().render()
    assert b"generation_requests_total" not in Metrics(str(tmp_path)).render()  # an empty folder: nothing written


def test_gunicorn_master_starts_one_sandbox_that_every_worker_uses(tmp_path):
    env = minimal_env({"SHARED_KEY": KEY, **SANDBOX, "DATABASE_URL": f"sqlite:///{tmp_path / 'g.db'}",
                       "INSTANCE_PATH": str(tmp_path / "instance"), "WORKER_ENABLED": "false",
                       "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)})
    with ProcessSet(tmp_path / "logs") as procs:
        server = start_gunicorn(procs, env, workers=2)
        url = server.wait_log(r"built-in OpenAI sandbox at (http://127\.0\.0\.1:\d+/v1)", 10).group(1)
        answers = [requests.get(f"{server.url}/health", timeout=10).json()["openai"] for _ in range(6)]
    assert {(a["mode"], a["base_url"]) for a in answers} == {("sandbox (external)", url)}
