"""Settings are read once from the environment; a bad value stops start-up and names its variable."""
from __future__ import annotations

import pytest

from app.config import ConfigError, Settings
from database import normalize_url

KEY = "k" * 32


@pytest.mark.parametrize("name,value", [
    ("MAX_BATCH_SIZE", "lots"), ("WEBHOOK_TIMEOUT", "-1"), ("BATCH_STRATEGY", "fastest"),
    ("ALLOW_PRIVATE_URLS", "maybe"), ("LOG_LEVEL", "loud"), ("RATE_LIMIT_SYNC", "100 per fortnight"),
    ("OUTBOUND_ALLOWED_HOSTS", "10.0.0.0/99"), ("DATABASE_URL", "mysql://x/y"), ("PORT", "70000"),
])
def test_invalid_values_name_the_variable(name, value):
    with pytest.raises(ConfigError) as error:
        Settings.from_env({"SHARED_KEY": KEY, name: value})
    assert name in str(error.value)


def test_short_shared_key_is_refused_outside_debug():
    with pytest.raises(ConfigError, match="SHARED_KEY"):
        Settings.from_env({"SHARED_KEY": "short"})
    assert Settings.from_env({"SHARED_KEY": "short", "DEBUG": "true"}).shared_key == "short"


def test_missing_shared_key_is_refused():
    with pytest.raises(ConfigError, match="SHARED_KEY"):
        Settings.from_env({})


def test_defaults_follow_the_spec():
    s = Settings.from_env({"SHARED_KEY": KEY})
    assert (s.max_batch_size, s.webhook_timeout, s.webhook_max_retries, s.worker_poll_interval) == (50000, 30, 5, 30)
    assert (s.openai_model_vision, s.openai_model_translation) == ("o4-mini", "gpt-4.1-mini")
    assert (s.rate_limit_sync, s.rate_limit_batch, s.rate_limit_polling) == ("100/minute", "10/minute", "1000/minute")
    assert s.uses_sandbox


def test_shared_keys_rotation_list():
    s = Settings.from_env({"SHARED_KEY": KEY, "SHARED_KEYS": f"{'o' * 32}, {KEY}"})
    assert s.shared_keys == (KEY, "o" * 32)


def test_spec_database_url_maps_to_psycopg3(tmp_path):
    assert normalize_url("postgresql://user:password@host:5432/db", str(tmp_path)) == \
        "postgresql+psycopg://user:password@host:5432/db"
    assert normalize_url(None, str(tmp_path)).startswith("sqlite:///")
