"""Entry point: ``gunicorn main:app`` serves it; ``python main.py`` runs the development server."""
from __future__ import annotations

import os
import secrets

from app import create_app
from app.config import ConfigError


def _development_key(instance_path: str) -> str:
    """A key kept under instance/, so `make run` works with no environment at all."""
    os.makedirs(instance_path, exist_ok=True)
    path = os.path.join(instance_path, "dev_shared_key")
    if not os.path.exists(path):
        with open(path, "w") as fh:
            fh.write(secrets.token_urlsafe(36))
        os.chmod(path, 0o600)
    with open(path) as fh:
        return fh.read().strip()


if __name__ == "__main__":
    instance = os.environ.get("INSTANCE_PATH") or os.path.abspath("instance")
    if not os.environ.get("SHARED_KEY") and not os.environ.get("SHARED_KEYS"):
        os.environ["SHARED_KEY"] = _development_key(instance)
        print(f"SHARED_KEY is not set: using the development key stored in {instance}/dev_shared_key")
    try:
        app = create_app()
    except ConfigError as error:
        raise SystemExit(f"configuration error: {error}") from None
    settings = app.extensions["genservice"].settings
    app.run(host=settings.host, port=settings.port, threaded=True, use_reloader=False)
else:
    app = create_app()
