"""The HTTP layer: a threaded werkzeug server speaking the OpenAI REST API under /v1.

Control endpoints for tests and demos live outside /v1: ``GET/POST /sandbox/config``,
``POST /sandbox/reset`` and ``GET /sandbox/stats``. They change how the sandbox answers
everyone, so they need the server's control token (``Authorization: Bearer <token>`` or
``X-Sandbox-Token: <token>``), which is not an OpenAI key.
"""
from __future__ import annotations

import hmac
import json
import logging
import os
import secrets
import shutil
import tempfile
import threading
import time
from typing import IO, Any, Callable

from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response
from werkzeug.wsgi import wrap_file

from services.sandbox import ids
from services.sandbox.config import ConfigError, SandboxConfig
from services.sandbox.errors import ApiError, invalid_request, missing_parameter
from services.sandbox.generate import CHAT, RESPONSES
from services.sandbox.listing import read_limit
from services.sandbox.prompt import has_image
from services.sandbox.state import SandboxState

log = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = 512 * 1024 * 1024
BAD_JSON = ("We could not parse the JSON body of your request. (HINT: This likely means you aren't using your "
            "HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)")
NO_CONTROL_TOKEN = ("The sandbox control endpoints need the sandbox's control token, sent as 'Authorization: "
                    "Bearer <token>' or 'X-Sandbox-Token: <token>'. It is printed when the sandbox starts, or set "
                    "with --control-token / SANDBOX_CONTROL_TOKEN.")
NO_KEY = ("You didn't provide an API key. You need to provide your API key in an Authorization header using "
          "Bearer auth (i.e. Authorization: Bearer YOUR_KEY).")

ROUTES = Map([
    Rule("/v1/responses", methods=["POST"], endpoint="create_response"),
    Rule("/v1/chat/completions", methods=["POST"], endpoint="create_chat_completion"),
    Rule("/v1/models", methods=["GET"], endpoint="list_models"),
    Rule("/v1/models/<path:model>", methods=["GET"], endpoint="retrieve_model"),
    Rule("/v1/files", methods=["POST"], endpoint="upload_file"),
    Rule("/v1/files", methods=["GET"], endpoint="list_files"),
    Rule("/v1/files/<file_id>", methods=["GET"], endpoint="retrieve_file"),
    Rule("/v1/files/<file_id>", methods=["DELETE"], endpoint="delete_file"),
    Rule("/v1/files/<file_id>/content", methods=["GET"], endpoint="file_content"),
    Rule("/v1/batches", methods=["POST"], endpoint="create_batch"),
    Rule("/v1/batches", methods=["GET"], endpoint="list_batches"),
    Rule("/v1/batches/<batch_id>", methods=["GET"], endpoint="retrieve_batch"),
    Rule("/v1/batches/<batch_id>/cancel", methods=["POST"], endpoint="cancel_batch"),
    Rule("/sandbox/config", methods=["GET"], endpoint="get_config"),
    Rule("/sandbox/config", methods=["POST"], endpoint="set_config"),
    Rule("/sandbox/reset", methods=["POST"], endpoint="reset"),
    Rule("/sandbox/stats", methods=["GET"], endpoint="get_stats"),
], strict_slashes=False)


class _UploadRequest(Request):
    """Streams multipart file parts straight into the file store's staging area, never into memory."""

    max_content_length = MAX_UPLOAD_BYTES
    staging: Callable[[], IO[bytes]]

    def _get_file_stream(self, total_content_length: int | None, content_type: str | None,
                         filename: str | None = None, content_length: int | None = None) -> IO[bytes]:
        return self.staging()


class SandboxApp:
    """The WSGI application; one instance per server, holding that server's state."""

    def __init__(self, state: SandboxState, control_token: str):
        self.state = state
        self._control_token = control_token.encode()

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Any:
        request = _UploadRequest(environ)
        request.staging = self.state.files.staging_file
        started = time.monotonic()
        try:
            response = self.dispatch(request)
        except ApiError as exc:
            response = _json(exc.body(), exc.status, exc.headers)
        except HTTPException as exc:
            error = ApiError(exc.code or 400, exc.description)
            response = _json(error.body(), error.status)
        except Exception:
            log.exception("sandbox: unhandled error on %s %s", request.method, request.path)
            response = _json(ApiError(500).body(), 500)
        finally:
            _discard_unclaimed_uploads(request, self.state.files.staging)
        if request.path.startswith("/v1/"):
            response.headers["x-request-id"] = ids.request_id()
            response.headers["openai-processing-ms"] = str(int((time.monotonic() - started) * 1000))
            response.headers["openai-version"] = "2020-10-01"
        return response(environ, start_response)

    def dispatch(self, request: Request) -> Response:
        if request.path.startswith("/v1/"):
            self.authenticate(request)
        elif request.path.startswith("/sandbox/"):
            self.authorize_control(request)
        try:
            endpoint, args = ROUTES.bind_to_environ(request.environ).match()
        except (NotFound, MethodNotAllowed):
            raise ApiError(404, f"Invalid URL ({request.method} {request.path})") from None
        except HTTPException as exc:
            raise ApiError(exc.code or 400, exc.description) from None
        return getattr(self, endpoint)(request, **args)

    def authenticate(self, request: Request) -> None:
        header = request.headers.get("Authorization", "")
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise ApiError(401, NO_KEY, code=None)
        required = self.state.config.required_api_key
        if required is not None and key.strip() != required:
            shown = key.strip()[:3] + "*" * 8 + key.strip()[-4:]
            raise ApiError(401, f"Incorrect API key provided: {shown}. You can find your API key at "
                                f"https://platform.openai.com/account/api-keys.")

    def authorize_control(self, request: Request) -> None:
        scheme, _, bearer = request.headers.get("Authorization", "").partition(" ")
        given = request.headers.get("X-Sandbox-Token") or (bearer.strip() if scheme.lower() == "bearer" else "")
        # header values arrive as latin-1 text; comparing bytes keeps odd characters from raising
        if not given or not hmac.compare_digest(given.encode("latin-1", "replace"), self._control_token):
            raise ApiError(401, NO_CONTROL_TOKEN, code="invalid_control_token")

    # models

    def list_models(self, request: Request) -> Response:
        return _json(self.state.catalog.listing())

    def retrieve_model(self, request: Request, model: str) -> Response:
        return _json(self.state.catalog.lookup(model).to_api())

    # model calls

    def create_response(self, request: Request) -> Response:
        return self._model_call(request, RESPONSES)

    def create_chat_completion(self, request: Request) -> Response:
        return self._model_call(request, CHAT)

    def _model_call(self, request: Request, endpoint: str) -> Response:
        body = _json_body(request)
        vision = has_image(endpoint, body)
        self.state.count_call(endpoint, vision)
        answer = self.state.respond(endpoint, body)
        error, delay = self.state.call_fate(vision)
        if error is not None:
            raise error
        if delay > 0:
            time.sleep(delay)
        return _json(answer)

    # files

    def upload_file(self, request: Request) -> Response:
        upload = request.files.get("file")
        purpose = request.form.get("purpose", "")
        if upload is None:
            raise missing_parameter("file")
        stream = upload.stream
        path = getattr(stream, "name", None)
        if not isinstance(path, str):
            raise invalid_request("The file part could not be read.", "file")
        stream.close()
        return _json(self.state.upload(path, upload.filename or "upload", purpose))

    def list_files(self, request: Request) -> Response:
        order = request.args.get("order", "desc")
        if order not in ("asc", "desc"):
            raise invalid_request(f"Invalid value for 'order': '{order}'.", "order", "invalid_value")
        page = self.state.files.page(purpose=request.args.get("purpose"), order=order,
                                     limit=read_limit(request.args, 10_000, 10_000), after=request.args.get("after"))
        return _json(page)

    def retrieve_file(self, request: Request, file_id: str) -> Response:
        return _json(self.state.files.get(file_id).to_api())

    def delete_file(self, request: Request, file_id: str) -> Response:
        return _json(self.state.delete_file(file_id))

    def file_content(self, request: Request, file_id: str) -> Response:
        record = self.state.files.get(file_id)
        try:
            handle = open(record.path, "rb")
        except FileNotFoundError:
            raise ApiError(404, f"No file found with id '{file_id}'.") from None
        response = Response(wrap_file(request.environ, handle), mimetype="application/octet-stream",
                            direct_passthrough=True)
        response.content_length = os.fstat(handle.fileno()).st_size
        return response

    # batches

    def create_batch(self, request: Request) -> Response:
        return _json(self.state.create_batch(_json_body(request)))

    def list_batches(self, request: Request) -> Response:
        return _json(self.state.batches_page(limit=read_limit(request.args, 20, 100), after=request.args.get("after")))

    def retrieve_batch(self, request: Request, batch_id: str) -> Response:
        return _json(self.state.batch(batch_id))

    def cancel_batch(self, request: Request, batch_id: str) -> Response:
        return _json(self.state.cancel_batch(batch_id))

    # control

    def get_config(self, request: Request) -> Response:
        return _json(self.state.config_dict())

    def set_config(self, request: Request) -> Response:
        try:
            return _json(self.state.update_config(_json_body(request)))
        except ConfigError as exc:
            raise invalid_request(str(exc)) from None

    def reset(self, request: Request) -> Response:
        self.state.reset()
        return _json({"reset": True, "config": self.state.config_dict()})

    def get_stats(self, request: Request) -> Response:
        return _json(self.state.stats.snapshot())


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(data, ensure_ascii=False), status=status, headers=headers,
                    mimetype="application/json")


def _json_body(request: Request) -> Any:
    raw = request.get_data(cache=False)
    try:
        return json.loads(raw) if raw.strip() else None
    except ValueError:
        raise invalid_request(BAD_JSON) from None


def _discard_unclaimed_uploads(request: Request, staging: str) -> None:
    """Remove staged parts no handler moved into the store (a rejected or misdirected multipart request)."""
    if "files" not in request.__dict__:
        return
    for upload in request.files.values():
        path = getattr(upload.stream, "name", None)
        upload.stream.close()
        if isinstance(path, str) and os.path.dirname(path) == staging and os.path.exists(path):
            os.unlink(path)


class _QuietHandler(WSGIRequestHandler):
    """No access log unless asked for; dropped connections (client timeouts) are not errors here."""

    verbose = False

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        if self.verbose:
            super().log_request(code, size)

    def log(self, type: str, message: str, *args: Any) -> None:
        if self.verbose:
            super().log(type, message, *args)


class SandboxServer:
    """An OpenAI-compatible emulator on a background thread, on 127.0.0.1 unless ``host`` says otherwise.

    ``control_token`` guards the /sandbox/ endpoints; without one a random token is made
    (``.control_token``, ``.control_headers``). ``configure()``, ``stats()`` and ``reset()`` act
    on the state directly and need no token.

    >>> with SandboxServer(SandboxConfig(vision_latency=0.2)) as sandbox:
    ...     client = OpenAI(api_key="x", base_url=sandbox.url)
    ...     httpx.get(f"{sandbox.root_url}/sandbox/stats", headers=sandbox.control_headers)
    """

    def __init__(self, config: SandboxConfig | None = None, *, host: str = "127.0.0.1", port: int = 0,
                 log_requests: bool = False, control_token: str | None = None):
        if control_token is not None and not (control_token.strip() and control_token.isascii()
                                              and control_token.isprintable() and " " not in control_token):
            raise ValueError("control_token must be printable ASCII without spaces")
        self._control_token = control_token or secrets.token_urlsafe(24)
        self.host = host
        self._requested_port = port
        self._log_requests = log_requests
        self._config = config or SandboxConfig()
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._root: str | None = None
        self.state: SandboxState | None = None

    def start(self) -> "SandboxServer":
        if self._server is not None:
            return self
        self._root = tempfile.mkdtemp(prefix="openai-sandbox-")
        self.state = SandboxState(self._config, self._root)
        handler = type("SandboxRequestHandler", (_QuietHandler,), {"verbose": self._log_requests})
        app = SandboxApp(self.state, self._control_token)
        self._server = make_server(self.host, self._requested_port, app, threaded=True, request_handler=handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="openai-sandbox", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None

    def __enter__(self) -> "SandboxServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the sandbox is not running; call start() first")
        return self._server.server_port

    @property
    def root_url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"

    @property
    def url(self) -> str:
        """The base URL for the OpenAI SDK, ending in /v1."""
        return f"{self.root_url}/v1"

    @property
    def control_token(self) -> str:
        """The token the control endpoints want (``Authorization: Bearer`` or ``X-Sandbox-Token``)."""
        return self._control_token

    @property
    def control_headers(self) -> dict[str, str]:
        return {"X-Sandbox-Token": self._control_token}

    @property
    def config(self) -> SandboxConfig:
        """The live config; prefer ``configure()``, which validates, for changes."""
        return self._config

    def configure(self, **changes: Any) -> dict[str, Any]:
        """Validated partial update of the config (raises ConfigError); works before start() too."""
        if self.state is None:
            self._config.update(changes)
            return self._config.to_dict()
        return self.state.update_config(changes)

    def stats(self) -> dict[str, Any]:
        return self._running_state().stats.snapshot()

    def reset(self) -> None:
        self._running_state().reset()

    def _running_state(self) -> SandboxState:
        if self.state is None:
            raise RuntimeError("the sandbox is not running; call start() first")
        return self.state
