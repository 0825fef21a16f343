"""The `pde-zoo explore` web server: the standard library's `http.server`, a JSON API and the
page's own static files (no third-party package, nothing fetched from outside).

Routes (GET unless noted; every answer JSON except the static files):

    /                         the page (static/index.html); /static/<file> its assets
    /api/models               the models offered: name, registry model, depth, test accuracy
    /api/model?name=M         load M (once per process) and describe it: kind, blocks, stability profile
    /api/forward?name=M&index=I[&channel=C|all]
    POST /api/forward         {"name": M, "pixels": [784 values in 0..1], "channel": C}
                              ψ after every block / output time (base64 float32), prediction, probabilities
    /api/block?name=M&block=K[&channel=C]
                              the physics of block K: coefficients, stencil, |G(p)|, propagator, stability

Errors answer 4xx with {"error": message}; an unexpected exception answers 500 with its one-line
message, never a traceback. Only files directly in the static directory are served.
"""

import errno
import ipaddress
import json
import socket
import sys
import threading
import time
import traceback
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from pde_zoo.explore.views import ExploreError, Explorer, input_image

STATIC_DIR = Path(__file__).resolve().parent / "static"
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
                 ".svg": "image/svg+xml", ".png": "image/png", ".ico": "image/x-icon"}
MAX_BODY = 1 << 20  # a drawing is ~10 kB of JSON
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "[::1]"}


def is_loopback(host):
    """True for 'localhost' and loopback IP addresses (127.0.0.0/8, ::1)."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def static_file(url_path):
    """The file of the static directory that `url_path` names, or None.

    Only a plain file name directly inside STATIC_DIR: no '/', '\\', '..', NUL or hidden files, and
    the resolved path must still lie in STATIC_DIR (no symbolic links out of it)."""
    name = unquote(url_path)
    if name in ("", "/"):
        name = "index.html"
    elif name.startswith("/static/"):
        name = name[len("/static/"):]
    else:
        return None
    if not name or any(ch in name for ch in "/\\\0") or name.startswith(".") or ".." in name:
        return None
    path = (STATIC_DIR / name).resolve()
    if path.parent != STATIC_DIR or not path.is_file() or path.suffix not in CONTENT_TYPES:
        return None
    return path


class Handler(BaseHTTPRequestHandler):
    server_version = "pde-zoo-explore"
    explorer = None  # set by `make_server`
    log = None  # list of (method, path, status, ms) when the server keeps a request log
    check_host = True

    def log_message(self, format, *args):  # noqa: A002  quiet by default; `serve` prints its own lines
        pass

    # ------------------------------------------------------------------ plumbing

    def _send(self, status, body, content_type="application/json; charset=utf-8"):
        data = body if isinstance(body, bytes) else json.dumps(body, allow_nan=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy",
                         "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        self._status = status

    def _error(self, status, message):
        self._send(status, {"error": message, "status": int(status)})

    def _host_ok(self):
        """A loopback-bound server answers only requests addressed to a loopback name (DNS rebinding)."""
        if not self.check_host:
            return True
        host = (self.headers.get("Host") or "").rsplit(":", 1)[0] if not (self.headers.get("Host") or "").startswith("[") \
            else (self.headers.get("Host") or "").split("]")[0] + "]"
        return is_loopback(host)

    def _dispatch(self, method):
        started = time.perf_counter()
        self._status = 500
        try:
            if not self._host_ok():
                return self._error(HTTPStatus.FORBIDDEN, "This server answers requests to localhost / 127.0.0.1 only.")
            url = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            if url.path.startswith("/api/"):
                body = self._body() if method == "POST" else {}
                return self._send(HTTPStatus.OK, self.api(method, url.path, query, body))
            if method != "GET" and method != "HEAD":
                return self._error(HTTPStatus.METHOD_NOT_ALLOWED, f"{method} is only for /api/forward.")
            path = static_file(url.path)
            if path is None:
                return self._error(HTTPStatus.NOT_FOUND, f"Not found: {url.path} (the server serves its own page and /api/ only).")
            return self._send(HTTPStatus.OK, path.read_bytes(), CONTENT_TYPES[path.suffix])
        except ExploreError as err:
            self._error(err.status, str(err))
        except Exception as err:  # noqa: BLE001  a bug or an unusable model: one line, never the traceback
            traceback.print_exc(file=sys.stderr)
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
        finally:
            ms = (time.perf_counter() - started) * 1e3
            if self.log is not None:
                self.log.append((method, self.path, self._status, round(ms, 2)))

    def _body(self):
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise ExploreError("Bad Content-Length.") from None
        if length > MAX_BODY:
            raise ExploreError(f"Request body too large ({length} bytes; at most {MAX_BODY}).", 413)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ExploreError(f"The request body must be JSON: {err}") from None
        if not isinstance(body, dict):
            raise ExploreError("The request body must be a JSON object.")
        return body

    def do_GET(self):  # noqa: N802
        self._dispatch("GET")

    def do_HEAD(self):  # noqa: N802
        self._dispatch("HEAD")

    def do_POST(self):  # noqa: N802
        self._dispatch("POST")

    # ------------------------------------------------------------------ the API

    def api(self, method, path, query, body):
        args = {**query, **body}
        explorer = self.explorer
        if path == "/api/models" and method == "GET":
            return {"models": explorer.models(), "default": explorer.default, "loaded": explorer.loaded()}
        if path not in ("/api/model", "/api/forward", "/api/block"):
            raise ExploreError(f"Unknown API route {path}: /api/models, /api/model, /api/forward, /api/block.", 404)
        if method == "POST" and path != "/api/forward":
            raise ExploreError(f"POST is only for /api/forward. Received: POST {path}", 405)
        name = args.get("name")
        if not name:
            raise ExploreError("Missing 'name': the model to show (see /api/models).")
        view = explorer.view(str(name))
        if path == "/api/model":
            return {**view.summary(), "counterpart": explorer.counterpart(view.name)}
        channel = args.get("channel", 0)
        if channel != "all":
            try:
                channel = int(channel)
            except (TypeError, ValueError):
                raise ExploreError(f"'channel' must be an integer or 'all'. Received: {channel!r}") from None
            if channel < 0:
                raise ExploreError(f"'channel' must be >= 0. Received: {channel}")
        if path == "/api/block":
            if channel == "all":
                raise ExploreError("'channel' of /api/block must be an integer.")
            return view.block_physics(args.get("block"), channel)
        image, meta = input_image(args.get("index"), args.get("pixels"))
        return view.forward(image, meta, channel)


def make_server(host="127.0.0.1", port=8765, models=None, allow_remote=False, log=None):
    """A `ThreadingHTTPServer` for the explorer (not yet serving).

    Raises:
        ValueError: a non-loopback host without allow_remote, a port in use or not allowed,
            unknown model names.
    """
    if not is_loopback(host) and not allow_remote:
        raise ValueError(
            f"--host {host} is not a loopback address: the explorer would be reachable from other machines. "
            "Pass --allow-remote to do that on purpose (it has no authentication), or keep the default 127.0.0.1."
        )
    explorer = Explorer(models)
    handler = type("ExploreHandler", (Handler,), {"explorer": explorer, "log": log, "check_host": is_loopback(host)})
    server_class = ThreadingHTTPServer
    if ":" in host.strip("[]"):
        server_class = type("ExploreServer6", (ThreadingHTTPServer,), {"address_family": socket.AF_INET6})
    try:
        server = server_class((host.strip("[]"), int(port)), handler)
    except OSError as err:
        if err.errno == errno.EADDRINUSE:
            raise ValueError(f"Port {port} on {host} is in use (another explorer?). Pass --port N for another port, or --port 0 for any free one.") from None
        if err.errno in (errno.EACCES, errno.EPERM):
            raise ValueError(f"Port {port} needs privileges on this machine; pass --port 8765 or any port above 1023.") from None
        raise ValueError(f"Cannot listen on {host}:{port}: {err.strerror or err}") from None
    server.daemon_threads = True
    server.explorer = explorer
    return server


def url_of(server):
    host, port = server.server_address[:2]
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{port}/"


def serve_in_thread(**kwargs):
    """Start a server in a daemon thread (tests, notebooks); returns (server, url). Stop it with
    `server.shutdown(); server.server_close()`."""
    server = make_server(**kwargs)
    thread = threading.Thread(target=server.serve_forever, name="pde-zoo-explore", daemon=True)
    thread.start()
    return server, url_of(server)
