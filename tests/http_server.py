"""A scriptable loopback HTTP server for download tests.

    with LoopbackServer() as server:
        url = server.add("/w.h5", body, script=[503, 503, Drop(after=1000)])
        ...
        assert server.count("/w.h5") == 4

Each request to a path takes the next action of its script; once the script is used up, the
path serves its body. Actions: an int status (answered with a small HTML error page), `Drop`
(send the headers of a full answer, then close after N body bytes), `Stall` (wait, then serve),
`Redirect` (answer 302 with a Location header).
Range requests (`bytes=N-`) get 206 unless the path was added with `ranges=False`. Every
request is recorded (method, path, headers, status sent).
"""

from __future__ import annotations

import http.server
import re
import socket
import threading
import time
from dataclasses import dataclass, field

_RANGE = re.compile(r"bytes=(\d+)-(\d*)$")


@dataclass(frozen=True)
class Drop:
    """Answer as if sending the whole (or ranged) body, then close after `after` bytes."""

    after: int


@dataclass(frozen=True)
class Stall:
    """Wait `seconds` after the headers before sending the body."""

    seconds: float


@dataclass(frozen=True)
class Redirect:
    """Answer 302 pointing at `location`."""

    location: str


@dataclass
class Route:
    body: bytes
    script: list = field(default_factory=list)
    ranges: bool = True
    content_type: str = "application/octet-stream"


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict
    status: int


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format, *args):
        """Keep test output quiet."""

    def do_GET(self):
        self._answer(send_body=True)

    def do_HEAD(self):
        self._answer(send_body=False)

    def _answer(self, send_body: bool) -> None:
        owner = self.server.owner
        path = self.path.split("?", 1)[0]
        with owner.lock:
            route = owner.routes.get(path)
            action = route.script.pop(0) if route and route.script else None
        if route is None:
            action = 404
        if isinstance(action, Redirect):
            self._record(path, 302)
            self.send_response(302)
            self.send_header("Location", action.location)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if isinstance(action, int):
            self._record(path, action)
            page = f"<!DOCTYPE html><html><body>HTTP {action}</body></html>".encode()
            self.send_response(action)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            if send_body:
                self.wfile.write(page)
            return
        body, status, first = route.body, 200, 0
        match = _RANGE.match(self.headers.get("Range", ""))
        if match and route.ranges:
            first = int(match.group(1))
            last = int(match.group(2)) if match.group(2) else len(body) - 1
            if first >= len(body):
                self._record(path, 416)
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
            body = body[first : last + 1]
        self._record(path, status)
        self.send_response(status)
        self.send_header("Content-Type", route.content_type)
        self.send_header("Content-Length", str(len(body)))
        if route.ranges:
            self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header(
                "Content-Range", f"bytes {first}-{first + len(body) - 1}/{len(route.body)}"
            )
        self.end_headers()
        if not send_body:
            return
        if isinstance(action, Stall):
            time.sleep(action.seconds)
        if isinstance(action, Drop):
            self.wfile.write(body[: action.after])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        self.wfile.write(body)

    def _record(self, path: str, status: int) -> None:
        with self.server.owner.lock:
            self.server.owner.requests.append(
                Request(self.command, path, dict(self.headers.items()), status)
            )


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    owner: LoopbackServer


class LoopbackServer:
    """An HTTP server on 127.0.0.1 (a free port) in a background thread."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def add(
        self,
        path: str,
        body: bytes,
        script: list | tuple = (),
        *,
        ranges: bool = True,
        content_type: str = "application/octet-stream",
    ) -> str:
        """Serve `body` at `path` after the scripted actions; return the URL."""
        with self.lock:
            self.routes[path] = Route(body, list(script), ranges, content_type)
        return self.url(path)

    def count(self, path: str | None = None) -> int:
        """Requests received (for one path, or all)."""
        with self.lock:
            return sum(1 for r in self.requests if path is None or r.path == path)

    def statuses(self, path: str) -> list[int]:
        with self.lock:
            return [r.status for r in self.requests if r.path == path]

    def ranges(self, path: str) -> list[str | None]:
        """The Range header of each request to a path (None when absent)."""
        with self.lock:
            return [r.headers.get("Range") for r in self.requests if r.path == path]

    def start(self) -> LoopbackServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
