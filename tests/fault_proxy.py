"""A fault-injecting HTTP proxy on loopback, put in front of a GCS emulator.

Each request is matched against a queue of planned faults (method + path regex, consumed in
order); the first match is applied, everything else is forwarded unchanged:

- ``status:503`` / ``status:429`` / ``status:403`` ...: answer with that status and a JSON error;
- ``reset``: close the connection without answering (the client sees a connection reset);
- ``slow:<seconds>``: wait, then forward;
- ``cut``: forward, but close the connection half-way through the response body;
- ``corrupt``: forward, with one byte of the response body flipped (checksums must catch it).
"""

from __future__ import annotations

import http.client
import http.server
import json
import re
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class Fault:
    """One planned fault, applied to the next request that matches."""

    action: str
    method: str = ".*"
    path: str = ".*"


@dataclass
class FaultPlan:
    """Planned faults, and a log of every request the proxy saw."""

    faults: list[Fault] = field(default_factory=list)
    seen: list[tuple[str, str, str]] = field(default_factory=list)  # (method, path, outcome)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, method: str, path: str) -> Fault | None:
        with self.lock:
            for index, fault in enumerate(self.faults):
                if re.fullmatch(fault.method, method) and re.search(fault.path, path):
                    return self.faults.pop(index)
        return None

    def record(self, method: str, path: str, outcome: str) -> None:
        with self.lock:
            self.seen.append((method, path, outcome))


def make_handler(upstream: str, plan: FaultPlan) -> type[http.server.BaseHTTPRequestHandler]:
    target = urlsplit(upstream)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _reset(self) -> None:
            # SO_LINGER 0: close with RST, as a dropped connection looks to the client.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True

        def _proxy(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            fault = plan.take(self.command, self.path)
            action = fault.action if fault else "forward"
            plan.record(self.command, self.path, action)
            if action == "reset":
                self._reset()
                return
            if action.startswith("status:"):
                status = int(action.split(":", 1)[1])
                payload = json.dumps({"error": {"code": status, "message": "injected"}}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                return
            if action.startswith("slow:"):
                time.sleep(float(action.split(":", 1)[1]))
            headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
            connection = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
            connection.request(self.command, self.path, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
            connection.close()
            self.send_response(response.status, response.reason)
            for key, value in response.getheaders():
                if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if action == "corrupt" and data:
                data = bytes([data[0] ^ 0xFF]) + data[1:]
            if action == "cut" and len(data) > 1:
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                self._reset()
                return
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _proxy

    return Handler


class FaultProxy:
    """Run the proxy in a thread; `url` is what STORAGE_EMULATOR_HOST should point at."""

    def __init__(self, upstream: str) -> None:
        self.plan = FaultPlan()
        self.server = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), make_handler(upstream, self.plan)
        )
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FaultProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def inject(self, action: str, method: str = ".*", path: str = ".*", times: int = 1) -> None:
        """Plan `times` faults of one kind."""
        with self.plan.lock:
            self.plan.faults.extend(Fault(action, method, path) for _ in range(times))

    def outcomes(self) -> list[str]:
        """What happened to each request, in order."""
        return [outcome for _, _, outcome in self.plan.seen]
