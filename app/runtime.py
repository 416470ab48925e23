"""Everything the service runs on, built once per process from Settings.

The web app, the background worker and the CLI all hold the same Runtime, so the routes, the
worker and a command call the very same service objects.
"""
from __future__ import annotations

import logging
import os
import socket
import uuid

from sqlalchemy import event

from app.config import ConfigError, Settings
from services.metrics import Metrics
from database import Database, normalize_url
from database.migrate import upgrade
from services.catalog import CHECK_EVERY, RETRY_AFTER_FAILURE, Catalog, ModelUnavailable, shutdown_timestamp
from services.generation import Generator
from services.images import ImageChecker
from services.netguard import OutboundPolicy
from services.openai_client import ModelSettings, OpenAIGateway, make_client

log = logging.getLogger(__name__)

SANDBOX_KEY = "sandbox-key"
SQL_OPERATIONS = {"INSERT": "create", "SELECT": "read", "UPDATE": "update", "DELETE": "delete"}


def start_sandbox(settings: Settings, logger=log):
    """The built-in OpenAI sandbox on 127.0.0.1, as the settings shape it: for one process (Runtime) or, started in
    gunicorn's master, for all its workers."""
    from services.sandbox import SandboxConfig, SandboxServer

    seconds = settings.sandbox_batch_seconds
    config = SandboxConfig(vision_latency=settings.sandbox_vision_latency, text_latency=settings.sandbox_text_latency,
                           batch_validating_seconds=seconds / 5, batch_in_progress_seconds=seconds * 3 / 5,
                           batch_finalizing_seconds=seconds / 5)
    server = SandboxServer(config=config, host="127.0.0.1", port=0).start()
    logger.warning("OPENAI_SANDBOX is on and OPENAI_API_KEY is not set: using the built-in OpenAI sandbox at %s; "
                   "its descriptions are made up", server.url)
    return server


class Runtime:
    def __init__(self, settings: Settings, migrate: bool = True):
        self.settings = settings
        self.instance_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.metrics = Metrics(settings.prometheus_multiproc_dir)
        self.db = Database(normalize_url(settings.database_url, settings.instance_path))
        event.listen(self.db.engine, "after_cursor_execute", self._count_statement)
        self.db.on_raw_read = self.metrics.db_ops.labels(operation="read").inc
        if migrate:
            upgrade(self.db)
        self.sandbox = None
        self.worker = None
        self.openai_base_url = settings.openai_base_url
        if settings.uses_sandbox and not settings.openai_base_url:
            self.sandbox = start_sandbox(settings)
            self.openai_base_url = self.sandbox.url
        self.ai = OpenAIGateway(
            make_client(settings.openai_api_key or SANDBOX_KEY, self.openai_base_url, settings.openai_timeout,
                        settings.openai_max_retries),
            ModelSettings(settings.openai_model_vision, settings.openai_model_translation,
                          settings.openai_reasoning_effort, settings.openai_translation_reasoning_effort,
                          settings.openai_max_tokens, settings.openai_temperature),
            on_error=self.metrics.openai_error,
            on_repairs=self.metrics.model_repairs,
            on_cost=self.metrics.openai_cost,
        )
        self.catalog = Catalog(self.ai.retrieve_model, {"OPENAI_MODEL_VISION": settings.openai_model_vision,
                                                        "OPENAI_MODEL_TRANSLATION": settings.openai_model_translation},
                               on_shutdown_date=self._shutdown_metric)
        try:
            complete = self.catalog.check(at_startup=True)
        except ModelUnavailable as exc:
            self.close()
            raise ConfigError(str(exc)) from None
        self.catalog.watch(CHECK_EVERY if complete else RETRY_AFTER_FAILURE)
        self.policy = OutboundPolicy(allow_private=settings.allow_private_urls,
                                     allowed_hosts=settings.outbound_allowed_hosts)
        if settings.allow_private_urls:
            log.warning("ALLOW_PRIVATE_URLS is on: photos and webhooks may reach private and loopback addresses "
                        "(development and tests only)")
        self.images = ImageChecker(self.policy, timeout=settings.image_timeout, max_bytes=settings.image_max_bytes,
                                   concurrency=settings.image_check_concurrency,
                                   host_concurrency=settings.image_host_concurrency)
        self.generator = Generator(self.images, self.ai, min_ratio=settings.image_min_ratio)

    def _shutdown_metric(self, setting: str, model: str, day) -> None:
        self.metrics.model_shutdown.labels(setting=setting, model=model).set(shutdown_timestamp(day))

    def _count_statement(self, conn, cursor, statement, parameters, context, executemany) -> None:
        operation = SQL_OPERATIONS.get(statement.lstrip()[:6].upper())
        if operation:
            self.metrics.db(operation)

    @property
    def openai_mode(self) -> str:
        if self.sandbox is not None:
            return "sandbox (in-process)"
        if not self.settings.openai_api_key:
            return "sandbox (external)"
        return "openai"

    def start_worker(self) -> None:
        """Start this process's background worker once (safe to call again, e.g. after a fork)."""
        from workers.loop import Worker

        if self.worker is not None and self.worker.alive and self.worker.pid == os.getpid():
            return
        self.worker = Worker(self)
        self.worker.start()

    def close(self) -> None:
        if self.worker is not None:
            self.worker.stop()
        if getattr(self, "catalog", None) is not None:
            self.catalog.stop()
        if getattr(self, "generator", None) is not None:
            self.generator.close()
            self.images.close()
        if self.sandbox is not None:
            self.sandbox.stop()
            self.sandbox = None
        self.db.dispose()
