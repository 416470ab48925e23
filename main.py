"""Entry point: ``gunicorn main:app`` serves it; ``python main.py`` runs the development server."""
from __future__ import annotations

from app import create_app
from app.config import ConfigError, development_settings

if __name__ == "__main__":
    try:
        settings = development_settings()
        app = create_app(settings)
    except ConfigError as error:
        raise SystemExit(f"configuration error: {error}") from None
    app.run(host=settings.host, port=settings.port, threaded=True, use_reloader=False)
else:
    app = create_app()
