"""Settings: declared once, read once per process from the environment.

Each setting is one declaration below: its attribute, type, variable, default, bounds and meaning.
pydantic-settings reads and checks them variable by variable; ``validate()`` adds the rules that span
several. A bad value stops start-up with a ``ConfigError`` naming the variable. The README's
configuration table is generated from these declarations (``readme_table()``), and a test holds
the two together. Nothing else in the service reads its settings from ``os.environ``.
"""
from __future__ import annotations

import ipaddress
import os
import re
import secrets
import sys
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping, TextIO

from pydantic import AfterValidator, BeforeValidator, Field, ValidationError
from pydantic_settings import BaseSettings, EnvSettingsSource, NoDecode, SettingsConfigDict
from pydantic_settings.sources.utils import parse_env_vars

from services.models import EFFORTS, registry
from services.signing import webhook_secret_key

VERSION = "2.0.0"
# today's defaults (checked 2026-12-01, see services/model_registry.json): a visual-reasoning model for the photos,
# a cheap high-volume one for the translations
DEFAULT_VISION_MODEL = "gpt-6.1-terra"
DEFAULT_TRANSLATION_MODEL = "gpt-6-luna"
DEV_KEY_FILE = "dev_shared_key"


class ConfigError(ValueError):
    """A setting is missing, unknown or malformed; the message names the variable."""


# ---- value types: how one variable's text becomes a value ----------------------------------------

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
_RATE_RE = re.compile(r"^\s*\d+\s*(/|\s+per\s+)\s*(\d+\s+)?(second|minute|hour|day|month|year)s?\s*$", re.I)


def _flag(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise ValueError("must be true or false (1/0, yes/no, on/off)")


def _items(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    return tuple(item.strip() for item in value.split(",") if item.strip())


def _hosts(value: Any) -> Any:
    hosts = []
    for item in _items(value):
        if "/" in item:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"has an invalid CIDR range {item!r}") from None
        hosts.append(item.lower())
    return tuple(hosts)


def _rate(value: str) -> str:
    if not all(_RATE_RE.match(part) for part in value.split(";")):
        raise ValueError("must look like '100/minute'")
    return value


def _case(convert):
    return BeforeValidator(lambda value: convert(value) if isinstance(value, str) else value)


Flag = Annotated[bool, BeforeValidator(_flag)]
Items = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_items)]
Hosts = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_hosts)]
Rate = Annotated[str, AfterValidator(_rate)]
Effort = Annotated[Literal[EFFORTS], _case(str.lower)]
LogLevel = Annotated[Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], _case(str.upper)]
LogFormat = Annotated[Literal["text", "json"], _case(str.lower)]
Strategy = Annotated[Literal["openai_batch", "direct", "auto"], _case(str.lower)]
Folder = Annotated[str, AfterValidator(os.path.abspath)]
Budget = Annotated[float | None, AfterValidator(lambda dollars: dollars or None)]  # 0 means no budget


def env(variable: str, default: Any, meaning: str, **bounds: Any) -> Any:
    """One setting: read from ``variable``; ``meaning`` is its row in the README table."""
    return Field(default, validation_alias=variable, description=meaning, **bounds)


MiB = 1024 * 1024


class Settings(BaseSettings):
    model_config = SettingsConfigDict(frozen=True, case_sensitive=True, extra="ignore", validate_by_name=True,
                                      validate_by_alias=True)

    # server
    host: str = env("HOST", "127.0.0.1", "address `python main.py` listens on (gunicorn: all addresses unless set)")
    port: int = env("PORT", 5000, "port `python main.py` and gunicorn listen on", ge=1, le=65535)
    debug: Flag = env("DEBUG", False, "debug mode: short shared keys are accepted")
    flask_debug: Flag = env("FLASK_DEBUG", False, "the same as `DEBUG` (either one turns debug mode on)")
    testing: Flag = env("TESTING", False, "test mode: like debug for the shared-key rules")
    log_level: LogLevel = env("LOG_LEVEL", "INFO", "`DEBUG`, `INFO`, `WARNING`, `ERROR` or `CRITICAL`")
    log_format: LogFormat = env("LOG_FORMAT", "text", "`text`, or `json` for one JSON object per line")
    session_secret: str = env("SESSION_SECRET", "", "signs dashboard sessions (unset: random per process)")
    instance_path: Folder = env("INSTANCE_PATH", "instance", "folder of the SQLite file and the development key "
                                "(relative to the working directory)", validate_default=True)
    trusted_proxy_hops: int = env("TRUSTED_PROXY_HOPS", 1, "proxies (nginx) whose `X-Forwarded-*` headers give the "
                                  "client address; 0 when clients reach the app directly", ge=0, le=5)
    # deployment: read by gunicorn.conf.py in gunicorn's master process
    gunicorn_bind: str | None = env("GUNICORN_BIND", None, "gunicorn's address (unset: `HOST`:`PORT`, all addresses "
                                    "when `HOST` is unset)")
    gunicorn_workers: int | None = env("GUNICORN_WORKERS", None, "gunicorn worker processes (unset: 2 per CPU, at "
                                       "most 4)", ge=1)
    gunicorn_threads: int = env("GUNICORN_THREADS", 8, "threads per gunicorn worker", ge=1)
    gunicorn_control_socket: str | None = env("GUNICORN_CONTROL_SOCKET", None, "gunicorn's control socket (unset: "
                                              "one per bind address in the temp folder)")
    prometheus_multiproc_dir: str | None = env("PROMETHEUS_MULTIPROC_DIR", None, "folder where every process writes "
                                               "its metrics for `/metrics` to sum (gunicorn makes one when unset)")
    # database
    database_url: str | None = env("DATABASE_URL", None, "`postgresql://user:password@host:5432/db` in production "
                                   "(psycopg 3); unset: SQLite in the instance folder")
    # authentication
    first_shared_key: str | None = env("SHARED_KEY", None, "HMAC key of the implicit client's requests and of its "
                                       "webhooks' `X-Signature`; required, at least 32 characters outside debug "
                                       "(`python main.py` makes a development key)")
    shared_keys: Items = env("SHARED_KEYS", (), "more accepted keys, comma-separated, for rotation")
    reference_signatures: Flag = env("REFERENCE_SIGNATURES", True, "the implicit client (`SHARED_KEY`) accepts the "
                                     "reference's signatures besides GS2; `false`: GS2 only")
    webhook_secret: str | None = env("WEBHOOK_SECRET", None, "the implicit client's `whsec_` webhook secret (unset: "
                                     "derived from `SHARED_KEY`; `genservice clients list` shows it)")
    webhook_secrets: Items = env("WEBHOOK_SECRETS", (), "more `whsec_` secrets of the implicit client, comma-separated: "
                                 "its webhooks carry a signature made with each too, for rotation")
    admin_token: str | None = env("ADMIN_TOKEN", None, "enables the job dashboard at `/dashboard`")
    idempotency_ttl_hours: float = env("IDEMPOTENCY_TTL_HOURS", 24.0, "hours a POST's `Idempotency-Key` answers "
                                       "its first answer again (then the key is forgotten)", gt=0, le=24 * 30)
    idempotency_lock_seconds: float = env("IDEMPOTENCY_LOCK_SECONDS", 60.0, "hold of a running request on its "
                                          "`Idempotency-Key` (409 for retries meanwhile), renewed every third of it; "
                                          "a retry this long after a request died takes its key over", ge=1.0)
    # OpenAI
    openai_api_key: str | None = env("OPENAI_API_KEY", None, "without it the service refuses to start, unless "
                                     "`OPENAI_SANDBOX=true`")
    openai_base_url: str | None = env("OPENAI_BASE_URL", None, "any OpenAI-compatible server, e.g. an external "
                                      "sandbox (unset: OpenAI)")
    openai_model_vision: str = env("OPENAI_MODEL_VISION", DEFAULT_VISION_MODEL, "model that reads the photos (see "
                                   "Models and cost)")
    openai_model_translation: str = env("OPENAI_MODEL_TRANSLATION", DEFAULT_TRANSLATION_MODEL, "model that "
                                        "translates the descriptions")
    openai_reasoning_effort: Effort = env("OPENAI_REASONING_EFFORT", "medium", "effort of the vision model, as the "
                                          f"model takes: {', '.join(f'`{e}`' for e in EFFORTS)}")
    openai_translation_reasoning_effort: Effort = env("OPENAI_TRANSLATION_REASONING_EFFORT", "none", "effort of the "
                                                      "translation model, same values")
    openai_sandbox: Flag = env("OPENAI_SANDBOX", False, "run on the built-in sandbox when no key is set (`make run` "
                               "and the tests set it)")
    openai_max_tokens: int = env("OPENAI_MAX_TOKENS", 4000, "visible output tokens per description (an effort other "
                                 "than none adds 8000 for reasoning, up to the model's limit)", ge=16)
    openai_temperature: float = env("OPENAI_TEMPERATURE", 0.1, "translation temperature, sent only to models that "
                                    "take it (GPT-6: effort none)", ge=0.0, le=2.0)
    openai_timeout: float = env("OPENAI_TIMEOUT", 120.0, "seconds per OpenAI call, handled by the SDK", ge=1.0)
    openai_max_retries: int = env("OPENAI_MAX_RETRIES", 2, "retries per OpenAI call, handled by the SDK", ge=0, le=10)
    # cost
    max_daily_cost_usd: Budget = env("MAX_DAILY_COST_USD", None, "refuse requests whose estimate would take the UTC "
                                     "day's OpenAI spending, every client's together, past this (429 "
                                     "`BUDGET_EXCEEDED`); unset or 0: off (a client's own budget still holds)", ge=0.0)
    cost_estimate_per_lot_usd: float = env("COST_ESTIMATE_PER_LOT_USD", 0.01, "estimated dollars per sync lot before "
                                           "there is completed work to average (batch lots: half)", ge=0.0)
    # sandbox (used when no OPENAI_API_KEY is set and OPENAI_SANDBOX=true)
    sandbox_vision_latency: float = env("SANDBOX_VISION_LATENCY", 0.0, "seconds the sandbox takes per photo "
                                        "description", ge=0.0)
    sandbox_text_latency: float = env("SANDBOX_TEXT_LATENCY", 0.0, "seconds the sandbox takes per translation",
                                      ge=0.0)
    sandbox_batch_seconds: float = env("SANDBOX_BATCH_SECONDS", 5.0, "seconds a sandbox batch takes from validating "
                                       "to completed", ge=0.0)
    # request limits
    max_content_length: int = env("MAX_CONTENT_LENGTH", 100 * MiB, "request body bytes (413 above)", ge=1024)
    max_batch_size: int = env("MAX_BATCH_SIZE", 50_000, "lots per request", ge=2)
    max_sync_images: int = env("MAX_SYNC_IMAGES", 20, "photos per lot in sync mode", ge=1)
    max_images_per_lot: int = env("MAX_IMAGES_PER_LOT", 50, "photos per lot in batch mode", ge=1)
    max_languages: int = env("MAX_LANGUAGES", 10, "languages per request", ge=1)
    max_queued_lots: int = env("MAX_QUEUED_LOTS", 1_000_000, "unfinished lots accepted across all jobs of every "
                               "client (503 `QUEUE_FULL` above)", ge=1)
    # images
    image_timeout: float = env("IMAGE_TIMEOUT", 10.0, "wall-clock seconds of one whole photo check (connect, "
                               "headers, body, HEAD and GET, every redirect hop)", ge=0.1)
    image_max_bytes: int = env("IMAGE_MAX_BYTES", 10 * MiB, "largest photo accepted, in bytes", ge=1)
    image_min_ratio: float = env("IMAGE_MIN_RATIO", 0.5, "share of a lot's photos that must pass the check", ge=0.0,
                                 le=1.0)
    image_check_concurrency: int = env("IMAGE_CHECK_CONCURRENCY", 256, "photo checks in flight per process (one "
                                       "event loop, not a thread each)", ge=1, le=4096)
    image_host_concurrency: int = env("IMAGE_HOST_CONCURRENCY", 32, "photo checks in flight per process to one "
                                      "destination (scheme, host, port), however its URLs are spelt; a host with more "
                                      "waits its turn while other hosts go on", ge=1, le=4096)
    image_host_concurrency_total: int = env(
        "IMAGE_HOST_CONCURRENCY_TOTAL", 0, "photo checks of batch jobs in flight to one destination from the whole "
        "deployment (every process and instance on the database), shared out among the live worker processes; 0: "
        "no cap beyond `IMAGE_HOST_CONCURRENCY` per process", ge=0, le=1_000_000)
    batch_validate_images: Flag = env("BATCH_VALIDATE_IMAGES", True, "check photos of batch lots before sending them")
    # outbound network
    allow_private_urls: Flag = env("ALLOW_PRIVATE_URLS", False, "let photos and webhooks reach private and loopback "
                                   "addresses (development and tests only)")
    outbound_allowed_hosts: Hosts = env("OUTBOUND_ALLOWED_HOSTS", (), "when set, photos and webhooks may only go to "
                                        "these host names (`.example.com` for subdomains) or CIDR ranges")
    # batches
    batch_strategy: Strategy = env("BATCH_STRATEGY", "openai_batch", "`openai_batch`, `direct` or `auto`")
    direct_max_lots: int = env("DIRECT_MAX_LOTS", 20, "largest job `auto` runs with direct calls", ge=0)
    direct_concurrency: int = env("DIRECT_CONCURRENCY", 8, "concurrent calls of the direct strategy", ge=1, le=256)
    # OpenAI's batch input file: up to 50,000 requests and 200 MB (API reference of POST /v1/batches, checked
    # 2026-12-01); the enqueued-token limit is per model, so more and smaller batches do not change what fits
    batch_shard_max_requests: int = env("BATCH_SHARD_MAX_REQUESTS", 10_000, "lines per OpenAI batch file (OpenAI "
                                        "takes up to 50,000; smaller batches end sooner and are worked on side by "
                                        "side)", ge=1, le=50_000)
    batch_shard_concurrency: int = env("BATCH_SHARD_CONCURRENCY", 4, "shards of one job's stage uploaded, polled and "
                                       "collected side by side on PostgreSQL (one at a time on SQLite)", ge=1, le=32)
    batch_shard_max_bytes: int = env("BATCH_SHARD_MAX_BYTES", 190 * MiB, "bytes per OpenAI batch file", ge=1024,
                                     le=200 * MiB)
    batch_resubmit_attempts: int = env("BATCH_RESUBMIT_ATTEMPTS", 1, "extra tries for a failed or unanswered line",
                                       ge=0, le=5)
    job_deadline_hours: float = env("JOB_DEADLINE_HOURS", 24.0, "hours after which the watchdog fails a job (plus "
                                    "the margin)", ge=0.0)
    job_deadline_margin_hours: float = env("JOB_DEADLINE_MARGIN_HOURS", 1.0, "hours of grace past the deadline",
                                           ge=0.0)
    result_retention_days: int = env("RESULT_RETENTION_DAYS", 30, "ended jobs older than this are purged (0 keeps "
                                     "everything)", ge=0)
    # webhooks
    webhook_timeout: float = env("WEBHOOK_TIMEOUT", 30.0, "wall-clock seconds for one whole attempt (connect, "
                                 "sending, the answer's headers and first KB)", ge=0.1)
    webhook_max_retries: int = env("WEBHOOK_MAX_RETRIES", 5, "attempts per delivery", ge=1, le=20)
    webhook_retry_base_seconds: float = env("WEBHOOK_RETRY_BASE_SECONDS", 30.0, "delay before attempt n is base × "
                                            "2^(n−2)", ge=0.0)
    webhook_max_lots_per_delivery: int = env("WEBHOOK_MAX_LOTS_PER_DELIVERY", 1000, "larger jobs get several "
                                             "deliveries with `chunk`", ge=1)
    webhook_concurrency: int = env("WEBHOOK_CONCURRENCY", 32, "deliveries in flight per process; one destination "
                                   "host gets a quarter first and never more than three quarters", ge=1, le=512)
    # worker
    worker_enabled: Flag = env("WORKER_ENABLED", True, "run the background worker in this process")
    worker_poll_interval: float = env("WORKER_POLL_INTERVAL", 30.0, "seconds between looks for work made elsewhere "
                                      "(own work, and on PostgreSQL a job accepted or starting its photo stage in "
                                      "any process, wakes it at once); an open OpenAI batch is looked at after a tenth "
                                      "of its age, at least 1 s and at most this", ge=0.05)
    worker_lease_seconds: float = env("WORKER_LEASE_SECONDS", 30.0, "lease on a job; renewed while it is worked on",
                                      ge=1.0)
    # test-only: the worker exits (status 137, like kill -9) at this named point; see workers/faults.py
    crash_after: str | None = env("GENSERVICE_CRASH_AFTER", None, "tests only: the worker dies at this named point "
                                  "(see `workers/faults.py`)")
    # rate limits
    rate_limit_sync: Rate = env("RATE_LIMIT_SYNC", "100/minute", "sync requests per client (unless it has its own "
                                "rate); per address, failed signature checks of sync requests")
    rate_limit_batch: Rate = env("RATE_LIMIT_BATCH", "10/minute", "batch requests per client (unless it has its own "
                                 "rate); per address, failed signature checks of batch requests")
    rate_limit_polling: Rate = env("RATE_LIMIT_POLLING", "1000/minute", "polling requests per client (unless it has "
                                   "its own rate): status, results, download, list, cancel, deliveries and estimate "
                                   "draw on one budget, counted over a sliding window; per address, failed "
                                   "signature checks of those")
    ratelimit_storage_uri: str = env("RATELIMIT_STORAGE_URI", "memory://", "`redis://host:6379` to share limits "
                                     "between instances")
    ratelimit_enabled: Flag = env("RATELIMIT_ENABLED", True, "apply the rate limits")
    extra: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings):
        # Settings(...) takes only what it is given; from_env is the one reader of an environment
        return (init_settings,)

    @property
    def shared_key(self) -> str:
        return self.shared_keys[0] if self.shared_keys else ""

    @property
    def uses_sandbox(self) -> bool:
        return not self.openai_api_key

    def listen_address(self, host: str | None = None, port: int | None = None) -> str:
        """host:port for gunicorn: the given ones, else HOST (all addresses when unset) and PORT."""
        host = host or (self.host if "host" in self.model_fields_set else "0.0.0.0")
        return f"[{host}]:{port or self.port}" if ":" in host else f"{host}:{port or self.port}"

    def replace(self, **changes: Any) -> "Settings":
        return self.model_copy(update=changes)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, check: bool = True) -> "Settings":
        """Read every declared variable from ``env`` (the process environment by default).

        ``check=False`` skips the rules that span several settings (``validate()``), for a process
        that needs a few deployment settings before the key exists (gunicorn's command line, the
        development key).
        """
        try:
            # validated as a model: the source above is the only one (BaseSettings() would build the others)
            settings = cls.model_validate(_Environment(cls, os.environ if env is None else env)())
        except ValidationError as error:
            raise ConfigError("; ".join(_describe(problem) for problem in error.errors())) from None
        keys = (settings.first_shared_key,) if settings.first_shared_key else ()
        settings = settings.replace(debug=settings.debug or settings.flask_debug,
                                    shared_keys=keys + tuple(k for k in settings.shared_keys if k not in keys))
        if check:
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
        for name, secret in [("WEBHOOK_SECRET", self.webhook_secret),
                             *(("WEBHOOK_SECRETS", item) for item in self.webhook_secrets)]:
            if secret is not None:
                try:
                    webhook_secret_key(secret)
                except ValueError as error:  # the value is a secret: not repeated in the message
                    raise ConfigError(f"{name} {error}") from None
        if self.database_url and not re.match(r"^(postgres(ql)?(\+\w+)?|sqlite(\+\w+)?)://", self.database_url):
            raise ConfigError("DATABASE_URL must be a postgresql:// or sqlite:// URL")


class _Environment(EnvSettingsSource):
    """pydantic-settings' environment source, over the mapping from_env was given instead of os.environ."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]):
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        """Values are trimmed, and a blank variable is an unset one (a blank flag is false, as it always was)."""
        flags = {field.validation_alias for field in self.settings_cls.model_fields.values() if field.annotation is bool}
        given = {name: value.strip() for name, value in self._environ.items() if value is not None}
        given = {name: value for name, value in given.items() if value or name in flags}
        return parse_env_vars(given, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str)


def _describe(problem: dict[str, Any]) -> str:
    variable = problem["loc"][0] if problem["loc"] else "a setting"
    message = problem["msg"].removeprefix("Value error, ")
    return f"{variable}: {message[:1].lower()}{message[1:]} (got {problem['input']!r})"


def variables() -> dict[str, str]:
    """Every declared variable and the attribute it sets."""
    return {field.validation_alias: name for name, field in Settings.model_fields.items() if field.validation_alias}


# ---- the development key ------------------------------------------------------------------------

def development_settings(env: Mapping[str, str] | None = None, out: TextIO | None = None) -> Settings:
    """Settings for a development start (`python main.py`, `genservice serve --dev`, `genservice worker`).

    Without SHARED_KEY or SHARED_KEYS, the key is the one kept in <INSTANCE_PATH>/dev_shared_key, made on
    the first start, so that `make run` works with no environment at all.
    """
    settings = Settings.from_env(env, check=False)
    if not settings.shared_keys:
        path = Path(settings.instance_path) / DEV_KEY_FILE
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_urlsafe(36))
            path.chmod(0o600)
        settings = settings.replace(shared_keys=(path.read_text().strip(),))
        print(f"SHARED_KEY is not set: using the development key stored in {path}", file=out or sys.stderr)
    settings.validate()
    return settings


# ---- the README's configuration table -----------------------------------------------------------

def shown_default(value: Any) -> str:
    """A default as the README's table states it."""
    if value in (None, "", ()):
        return "—"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str):
        return f"`{value}`"
    if isinstance(value, int) and value >= MiB and value % MiB == 0:
        return f"{value} ({value // MiB} MiB)"
    return str(value)


def readme_rows() -> list[str]:
    """The rows of the README's configuration table, one per declared variable, in declaration order."""
    return [f"| `{field.validation_alias}` | {shown_default(field.default)} | {field.description} |"
            for field in Settings.model_fields.values() if field.validation_alias]


def readme_table() -> str:
    """The README's configuration table: ``python -c 'from app.config import readme_table; print(readme_table())'``."""
    return "\n".join(["| Variable | Default | Meaning |", "|---|---|---|", *readme_rows()])
