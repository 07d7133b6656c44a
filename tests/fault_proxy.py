"""A local HTTP proxy that forwards to a real server and answers chosen requests with a fault.

    python -c "import sys; sys.path.insert(0, 'tests'); from fault_proxy import FaultProxy; print(FaultProxy)"

`FaultProxy(upstream, decide)` listens on 127.0.0.1 (a free port) and, for each request,
calls `decide(method, path, n)` (n counts requests from 1): None forwards the request to
`upstream` ("http://host:port") unchanged and returns its answer; a `Fault` is sent instead
(its status, headers and body; or a dropped connection; or a hang), and the upstream never
sees the request. Tests point a real
client (pyarrow's S3 filesystem, an HTTP client) at `proxy.url` to meet real error responses.
"""

from __future__ import annotations

import http.client
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Fault:
    """An answer in place of the upstream's: `status` with `headers` and `body`; or, with
    `drop`, the connection closed with no answer at all; or, with `hang` (an Event), no
    answer until it is set, as a stuck server's (then the connection is closed)."""

    status: int = 0
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False
    hang: threading.Event | None = None


Decide = Callable[[str, str, int], Fault | None]


class FaultProxy:
    def __init__(self, upstream: str, decide: Decide) -> None:
        target = urlsplit(upstream)
        self.upstream = (target.hostname or "127.0.0.1", target.port or 80)
        self.decide = decide
        self.requests: list[tuple[str, str, int | None]] = []  # method, path, fault status
        self.body = b""  # the body of the request `decide` is deciding
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _body(self) -> bytes:
                if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                    parts = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return b"".join(parts)
                        parts.append(self.rfile.read(size))
                        self.rfile.readline()
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _any(self) -> None:
                body = self._body()
                with proxy._lock:
                    proxy.body = body  # what `decide` may look at: the request it decides
                    n = len(proxy.requests) + 1
                    fault = proxy.decide(self.command, self.path, n)
                    proxy.requests.append((self.command, self.path, fault and fault.status))
                if fault is not None and fault.hang is not None:
                    fault.hang.wait()
                if fault is not None and (fault.drop or fault.hang is not None):
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if fault is not None:
                    self.send_response(fault.status)
                    for key, value in fault.headers.items():
                        self.send_header(key, value)
                    self.send_header("Connection", "close")
                    self.close_connection = True
                    self.send_header("Content-Length", str(len(fault.body)))
                    self.end_headers()
                    self.wfile.write(fault.body)
                    return
                conn = http.client.HTTPConnection(*proxy.upstream, timeout=60)
                skip = ("host", "transfer-encoding", "content-length", "expect")
                headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
                headers["Host"] = f"{proxy.upstream[0]}:{proxy.upstream[1]}"
                conn.request(self.command, self.path, body=body, headers=headers)
                answer = conn.getresponse()
                data = answer.read()
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(key, value)
                length = answer.getheader("Content-Length") if self.command == "HEAD" else None
                self.send_header("Content-Length", length or str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
