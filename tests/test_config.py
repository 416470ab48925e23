"""Settings are read once from the environment; a bad value stops start-up and names its variable."""
from __future__ import annotations

import pytest

from app.config import ConfigError, Settings
from database import normalize_url

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
