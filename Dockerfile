# Generation Service: gunicorn serving main:app, as the non-root user "genservice".
#   docker build -t generation-service .
#   docker compose up            (see docker-compose.yml: PostgreSQL, Redis and nginx around it)
FROM python:3.11-slim

# PYTHONPATH: the source tree in /app is what runs (the templates live beside the packages, not in them)
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/app \
    INSTANCE_PATH=/app/instance \
    HOST=0.0.0.0 \
    PORT=5000

WORKDIR /app

RUN groupadd --system --gid 1000 genservice \
 && useradd --system --uid 1000 --gid genservice --home-dir /app --shell /usr/sbin/nologin genservice

# dependencies first, in their own layer, so a code change does not reinstall them
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

COPY . .
RUN pip install --no-deps . \
 && rm -rf build *.egg-info \
 && mkdir -p /app/instance \
 && chown genservice:genservice /app/instance

USER genservice

EXPOSE 5000

HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:5000/health', timeout=8).status == 200 else 1)"]

CMD ["gunicorn", "-c", "gunicorn.conf.py", "main:app"]
