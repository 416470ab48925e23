"""Prometheus metrics with the spec's names; correct across gunicorn workers.

With ``PROMETHEUS_MULTIPROC_DIR`` set (gunicorn.conf.py does it; the settings hand the folder over),
every process writes its values to that directory and /metrics sums them; without it, values live in
this process.
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    def __init__(self, multiproc_dir: str | None = None):
        self.multiproc_dir = multiproc_dir
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("generation_requests_total", "Generation requests accepted", ["mode"], registry=r)
        self.duration = Histogram("generation_duration_seconds", "Time to answer a sync request or finish a batch job",
                                  ["mode"], registry=r,
                                  buckets=(0.5, 1, 2, 3, 5, 10, 20, 30, 60, 120, 300, 900, 3600, 14400, 86400))
        self.openai_errors = Counter("openai_api_errors_total", "Failed OpenAI calls", ["api"], registry=r)
        self.webhooks = Counter("webhook_deliveries_total", "Webhook delivery attempts by outcome", ["status"], registry=r)
        self.jobs = Counter("batch_jobs_total", "Batch jobs by the status they reached", ["status"], registry=r)
        self.db_ops = Counter("database_operations_total", "Database operations", ["operation"], registry=r)
        self.http = Counter("http_requests_total", "HTTP requests by route and status", ["endpoint", "status"],
                            registry=r)
        self._http_children: dict = {}
        self.repairs = Counter("model_output_repairs_total", "Vision answers repaired: findings dropped or fields fixed",
                               ["kind"], registry=r)
        self.cost = Counter("openai_cost_usd_total", "OpenAI spending in US dollars, priced from the model registry "
                            "(api: responses for direct calls, batch for Batch API lines)", ["model", "api"],
                            registry=r)
        self.model_shutdown = Gauge("openai_model_shutdown_timestamp_seconds",
                                    "Unix time of the announced shutdown of each configured model (0: none announced)",
                                    ["setting", "model"], registry=r, multiprocess_mode="max")
        self.worker_beat = Gauge("background_worker_last_beat_seconds", "Unix time of the worker's last loop",
                                 registry=r, multiprocess_mode="max")

    def http_request(self, endpoint: str, status: int) -> None:
        # one child per route and status, looked up once (labels() takes a lock and builds a key)
        child = self._http_children.get((endpoint, status))
        if child is None:
            child = self._http_children[(endpoint, status)] = self.http.labels(endpoint=endpoint, status=str(status))
        child.inc()

    def openai_error(self, api: str) -> None:
        self.openai_errors.labels(api=api).inc()

    def openai_cost(self, model: str, api: str, dollars: float) -> None:
        self.cost.labels(model=model, api=api).inc(dollars)

    def model_repairs(self, repairs) -> None:
        if repairs.dropped:
            self.repairs.labels(kind="dropped_finding").inc(repairs.dropped)
        if repairs.fixed:
            self.repairs.labels(kind="fixed_field").inc(repairs.fixed)

    def db(self, operation: str, count: int = 1) -> None:
        self.db_ops.labels(operation=operation).inc(count)

    def render(self) -> bytes:
        if self.multiproc_dir:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=self.multiproc_dir)
            return generate_latest(registry)
        return generate_latest(self.registry)
