"""Settings: one typed object, read once from the environment.

Every variable is parsed by a small typed helper; a value that does not parse, or a
choice that is not one of the allowed ones, stops start-up with a message that names the
variable. Nothing else in the code reads ``os.environ``.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from services.models import EFFORTS, registry

VERSION = "2.0.0"
# today's defaults (checked 2026-12-01, see services/model_registry.json): a visual-reasoning model for the photos,
# a cheap high-volume one for the translations
DEFAULT_VISION_MODEL = "gpt-6.1-terra"
DEFAULT_TRANSLATION_MODEL = "gpt-6-luna"


class ConfigError(ValueError):
    """A setting is missing, unknown or malformed; the message names the variable."""


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
_RATE_RE = re.compile(r"^\s*\d+\s*(/|\s+per\s+)\s*(\d+\s+)?(second|minute|hour|day|month|year)s?\s*$", re.I)


def _str(env: Mapping[str, str], name: str, default: str | None = None) -> str | None:
    value = env.get(name)
    if value is None or value.strip() == "":
        return default
    return value.strip()


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _number(env: Mapping[str, str], name: str, default, kind=int, minimum=None, maximum=None):
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = kind(raw.strip())
    except ValueError:
        raise ConfigError(f"{name} must be a {kind.__name__}, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {raw!r}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name} must be at most {maximum}, got {raw!r}")
    return value


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = (_str(env, name, default) or default).lower()
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {env.get(name)!r}")
    return value


def _list(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    raw = _str(env, name, "") or ""
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def _rate(env: Mapping[str, str], name: str, default: str) -> str:
    value = _str(env, name, default) or default
    for part in value.split(";"):
        if not _RATE_RE.match(part):
            raise ConfigError(f"{name} must look like '100/minute', got {value!r}")
    return value


def _hosts(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    hosts = []
    for item in _list(env, name):
        if "/" in item:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ConfigError(f"{name} has an invalid CIDR range {item!r}") from None
        hosts.append(item.lower())
    return tuple(hosts)


@dataclass(frozen=True)
class Settings:
    # server
    host: str = "127.0.0.1"
    port: int = 5000
    debug: bool = False
    testing: bool = False
    log_level: str = "INFO"
    log_format: str = "text"
    session_secret: str = ""
    instance_path: str = "instance"
    trusted_proxy_hops: int = 1
    # database
    database_url: str | None = None
    # authentication
    shared_keys: tuple[str, ...] = ()
    admin_token: str | None = None
    # OpenAI
    openai_api_key: str | None = None
    openai_base_url: str | None = None
    openai_model_vision: str = DEFAULT_VISION_MODEL
    openai_model_translation: str = DEFAULT_TRANSLATION_MODEL
    openai_reasoning_effort: str = "medium"
    openai_translation_reasoning_effort: str = "none"
    openai_sandbox: bool = False
    openai_max_tokens: int = 4000
    openai_temperature: float = 0.1
    openai_timeout: float = 120.0
    openai_max_retries: int = 2
    # cost
    max_daily_cost_usd: float | None = None
    cost_estimate_per_lot_usd: float = 0.01
    # sandbox (used when no OPENAI_API_KEY is set and OPENAI_SANDBOX=true)
    sandbox_vision_latency: float = 0.0
    sandbox_text_latency: float = 0.0
    sandbox_batch_seconds: float = 5.0
    # request limits
    max_content_length: int = 100 * 1024 * 1024
    max_batch_size: int = 50_000
    max_sync_images: int = 20
    max_images_per_lot: int = 50
    max_languages: int = 10
    max_queued_lots: int = 1_000_000
    # images
    image_timeout: float = 10.0
    image_max_bytes: int = 10 * 1024 * 1024
    image_min_ratio: float = 0.5
    image_check_concurrency: int = 256
    image_host_concurrency: int = 32
    batch_validate_images: bool = True
    # outbound network
    allow_private_urls: bool = False
    outbound_allowed_hosts: tuple[str, ...] = ()
    # batches
    batch_strategy: str = "openai_batch"
    direct_max_lots: int = 20
    direct_concurrency: int = 8
    batch_shard_max_requests: int = 50_000
    batch_shard_max_bytes: int = 190 * 1024 * 1024
    batch_resubmit_attempts: int = 1
    job_deadline_hours: float = 24.0
    job_deadline_margin_hours: float = 1.0
    result_retention_days: int = 30
    # webhooks
    webhook_timeout: float = 30.0
    webhook_max_retries: int = 5
    webhook_retry_base_seconds: float = 30.0
    webhook_max_lots_per_delivery: int = 1000
    webhook_concurrency: int = 32
    # worker
    worker_enabled: bool = True
    worker_poll_interval: float = 30.0
    worker_lease_seconds: float = 30.0
    # test-only: the worker exits (status 137, like kill -9) at this named point; see workers/faults.py
    crash_after: str | None = None
    # rate limits
    rate_limit_sync: str = "100/minute"
    rate_limit_batch: str = "10/minute"
    rate_limit_polling: str = "1000/minute"
    ratelimit_storage_uri: str = "memory://"
    ratelimit_enabled: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def shared_key(self) -> str:
        return self.shared_keys[0] if self.shared_keys else ""

    @property
    def uses_sandbox(self) -> bool:
        return not self.openai_api_key

    def replace(self, **changes: Any) -> "Settings":
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        debug = _bool(env, "FLASK_DEBUG", False) or _bool(env, "DEBUG", False)
        keys = []
        if _str(env, "SHARED_KEY"):
            keys.append(_str(env, "SHARED_KEY"))
        keys.extend(k for k in _list(env, "SHARED_KEYS") if k not in keys)
        settings = cls(
            host=_str(env, "HOST", "127.0.0.1"),
            port=_number(env, "PORT", 5000, int, 1, 65535),
            debug=debug,
            testing=_bool(env, "TESTING", False),
            log_level=_choice(env, "LOG_LEVEL", "info", ("debug", "info", "warning", "error", "critical")).upper(),
            log_format=_choice(env, "LOG_FORMAT", "text", ("text", "json")),
            session_secret=_str(env, "SESSION_SECRET", "") or "",
            instance_path=_str(env, "INSTANCE_PATH", os.path.abspath("instance")),
            trusted_proxy_hops=_number(env, "TRUSTED_PROXY_HOPS", 1, int, 0, 5),
            database_url=_str(env, "DATABASE_URL"),
            shared_keys=tuple(keys),
            admin_token=_str(env, "ADMIN_TOKEN"),
            openai_api_key=_str(env, "OPENAI_API_KEY"),
            openai_base_url=_str(env, "OPENAI_BASE_URL"),
            openai_model_vision=_str(env, "OPENAI_MODEL_VISION", DEFAULT_VISION_MODEL),
            openai_model_translation=_str(env, "OPENAI_MODEL_TRANSLATION", DEFAULT_TRANSLATION_MODEL),
            openai_reasoning_effort=_choice(env, "OPENAI_REASONING_EFFORT", "medium", EFFORTS),
            openai_translation_reasoning_effort=_choice(env, "OPENAI_TRANSLATION_REASONING_EFFORT", "none", EFFORTS),
            openai_sandbox=_bool(env, "OPENAI_SANDBOX", False),
            max_daily_cost_usd=_number(env, "MAX_DAILY_COST_USD", None, float, 0.0) or None,
            cost_estimate_per_lot_usd=_number(env, "COST_ESTIMATE_PER_LOT_USD", 0.01, float, 0.0),
            openai_max_tokens=_number(env, "OPENAI_MAX_TOKENS", 4000, int, 16),
            openai_temperature=_number(env, "OPENAI_TEMPERATURE", 0.1, float, 0.0, 2.0),
            openai_timeout=_number(env, "OPENAI_TIMEOUT", 120.0, float, 1.0),
            openai_max_retries=_number(env, "OPENAI_MAX_RETRIES", 2, int, 0, 10),
            sandbox_vision_latency=_number(env, "SANDBOX_VISION_LATENCY", 0.0, float, 0.0),
            sandbox_text_latency=_number(env, "SANDBOX_TEXT_LATENCY", 0.0, float, 0.0),
            sandbox_batch_seconds=_number(env, "SANDBOX_BATCH_SECONDS", 5.0, float, 0.0),
            max_content_length=_number(env, "MAX_CONTENT_LENGTH", 100 * 1024 * 1024, int, 1024),
            max_batch_size=_number(env, "MAX_BATCH_SIZE", 50_000, int, 2),
            max_sync_images=_number(env, "MAX_SYNC_IMAGES", 20, int, 1),
            max_images_per_lot=_number(env, "MAX_IMAGES_PER_LOT", 50, int, 1),
            max_languages=_number(env, "MAX_LANGUAGES", 10, int, 1),
            max_queued_lots=_number(env, "MAX_QUEUED_LOTS", 1_000_000, int, 1),
            image_timeout=_number(env, "IMAGE_TIMEOUT", 10.0, float, 0.1),
            image_max_bytes=_number(env, "IMAGE_MAX_BYTES", 10 * 1024 * 1024, int, 1),
            image_min_ratio=_number(env, "IMAGE_MIN_RATIO", 0.5, float, 0.0, 1.0),
            image_check_concurrency=_number(env, "IMAGE_CHECK_CONCURRENCY", 256, int, 1, 4096),
            image_host_concurrency=_number(env, "IMAGE_HOST_CONCURRENCY", 32, int, 1, 4096),
            batch_validate_images=_bool(env, "BATCH_VALIDATE_IMAGES", True),
            allow_private_urls=_bool(env, "ALLOW_PRIVATE_URLS", False),
            outbound_allowed_hosts=_hosts(env, "OUTBOUND_ALLOWED_HOSTS"),
            batch_strategy=_choice(env, "BATCH_STRATEGY", "openai_batch", ("openai_batch", "direct", "auto")),
            direct_max_lots=_number(env, "DIRECT_MAX_LOTS", 20, int, 0),
            direct_concurrency=_number(env, "DIRECT_CONCURRENCY", 8, int, 1, 256),
            batch_shard_max_requests=_number(env, "BATCH_SHARD_MAX_REQUESTS", 50_000, int, 1, 50_000),
            batch_shard_max_bytes=_number(env, "BATCH_SHARD_MAX_BYTES", 190 * 1024 * 1024, int, 1024, 200 * 1024 * 1024),
            batch_resubmit_attempts=_number(env, "BATCH_RESUBMIT_ATTEMPTS", 1, int, 0, 5),
            job_deadline_hours=_number(env, "JOB_DEADLINE_HOURS", 24.0, float, 0.0),
            job_deadline_margin_hours=_number(env, "JOB_DEADLINE_MARGIN_HOURS", 1.0, float, 0.0),
            result_retention_days=_number(env, "RESULT_RETENTION_DAYS", 30, int, 0),
            webhook_timeout=_number(env, "WEBHOOK_TIMEOUT", 30.0, float, 0.1),
            webhook_max_retries=_number(env, "WEBHOOK_MAX_RETRIES", 5, int, 1, 20),
            webhook_retry_base_seconds=_number(env, "WEBHOOK_RETRY_BASE_SECONDS", 30.0, float, 0.0),
            webhook_max_lots_per_delivery=_number(env, "WEBHOOK_MAX_LOTS_PER_DELIVERY", 1000, int, 1),
            webhook_concurrency=_number(env, "WEBHOOK_CONCURRENCY", 32, int, 1, 512),
            worker_enabled=_bool(env, "WORKER_ENABLED", True),
            worker_poll_interval=_number(env, "WORKER_POLL_INTERVAL", 30.0, float, 0.05),
            worker_lease_seconds=_number(env, "WORKER_LEASE_SECONDS", 30.0, float, 1.0),
            crash_after=_str(env, "GENSERVICE_CRASH_AFTER"),
            rate_limit_sync=_rate(env, "RATE_LIMIT_SYNC", "100/minute"),
            rate_limit_batch=_rate(env, "RATE_LIMIT_BATCH", "10/minute"),
            rate_limit_polling=_rate(env, "RATE_LIMIT_POLLING", "1000/minute"),
            ratelimit_storage_uri=_str(env, "RATELIMIT_STORAGE_URI", "memory://"),
            ratelimit_enabled=_bool(env, "RATELIMIT_ENABLED", True),
        )
        settings.validate()
        return settings

    def validate(self) -> None:
        if not self.shared_keys and not (self.debug or self.testing):
            raise ConfigError("SHARED_KEY must be set (at least 32 characters)")
        if not (self.debug or self.testing):
            short = [k for k in self.shared_keys if len(k) < 32]
            if short:
                raise ConfigError("SHARED_KEY (and every key in SHARED_KEYS) must be at least 32 characters outside debug")
        if not self.openai_api_key and not self.openai_sandbox:
            raise ConfigError("OPENAI_API_KEY is not set: set it to use OpenAI, or set OPENAI_SANDBOX=true to run on "
                              "the built-in OpenAI sandbox, whose descriptions are made up (development and tests "
                              "only)")
        for model_name, model, effort_name, effort in (
                ("OPENAI_MODEL_VISION", self.openai_model_vision, "OPENAI_REASONING_EFFORT",
                 self.openai_reasoning_effort),
                ("OPENAI_MODEL_TRANSLATION", self.openai_model_translation, "OPENAI_TRANSLATION_REASONING_EFFORT",
                 self.openai_translation_reasoning_effort)):
            rules = registry().rules(model)
            if rules.known and rules.reasoning and not rules.takes_effort(effort):
                raise ConfigError(f"{effort_name}={effort} is not an effort {model} ({model_name}) takes; it takes "
                                  f"{', '.join(rules.efforts)}")
        if self.database_url and not re.match(r"^(postgres(ql)?(\+\w+)?|sqlite(\+\w+)?)://", self.database_url):
            raise ConfigError("DATABASE_URL must be a postgresql:// or sqlite:// URL")
