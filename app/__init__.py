"""Flask app factory: settings, runtime, blueprints, error handlers, request ids."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from app.config import VERSION, Settings

if TYPE_CHECKING:
    from flask import Flask

# The templates are the top-level templates/ in a checkout; an installed wheel carries them as
# package data in app/templates (pyproject.toml maps one onto the other). Flask is imported only by
# create_app, so the worker process and the client package can import app.* without loading it.
_HERE = Path(__file__).resolve().parent
TEMPLATES = _HERE / "templates" if (_HERE / "templates").is_dir() else _HERE.parent / "templates"


def create_app(test_config: Mapping[str, Any] | Settings | None = None, *, start_worker: bool | None = None) -> Flask:
    """Build the app. ``test_config`` is a Settings object or a mapping of environment-style overrides."""
    from flask import Flask

    from app import api, dashboard, errors, health, limits, logs, web
    from app.runtime import Runtime

    if isinstance(test_config, Settings):
        settings = test_config
    else:
        import os

        env = dict(os.environ)
        env.update({k: str(v) for k, v in (test_config or {}).items()})
        settings = Settings.from_env(env)

    logs.configure(settings.log_level, settings.log_format)
    app = Flask(__name__, template_folder=str(TEMPLATES), instance_path=settings.instance_path)
    app.config.update(
        SECRET_KEY=settings.session_secret or None,
        MAX_CONTENT_LENGTH=settings.max_content_length,
        JSON_SORT_KEYS=False,
        TESTING=settings.testing,
    )
    app.json.sort_keys = False
    app.json.ensure_ascii = False
    runtime = Runtime(settings)
    app.extensions["genservice"] = runtime
    logs.init_app(app)
    errors.register_error_handlers(app)
    api.init_app(app)
    health.init_app(app)
    web.init_app(app)
    limits.init_app(app)
    dashboard.init_app(app)
    if start_worker if start_worker is not None else settings.worker_enabled:
        runtime.start_worker()
    logging.getLogger(__name__).info("generation service %s ready (database %s, OpenAI: %s)", VERSION,
                                     runtime.db.safe_url, runtime.openai_mode)
    return app
