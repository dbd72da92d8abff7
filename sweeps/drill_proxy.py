"""Loopback HTTP proxies in front of a tracking server that lose the reply to a ``runs/create`` after the
server has committed it: the fault drill's commit-then-die and the reliability tests' lossy path."""
from __future__ import annotations

import socket
import threading


class CreateFaultProxy:
    """A threaded loopback HTTP proxy to the server on ``upstream_port`` (``uri``, ``port``). Every request
    is forwarded; after a ``runs/create`` is forwarded (the server has committed the run), :meth:`on_create`
    decides whether its reply is lost: the client's connection then closes without a byte."""

    def __init__(self, upstream_port: int):
        import http.client
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.upstream = upstream_port
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _body(self) -> bytes | None:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    data = b""
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            self.rfile.readline()
                            return data
                        data += self.rfile.read(size)
                        self.rfile.readline()
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else None

            def _drop_reply(self) -> None:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)

            def forward(self):
                body = self._body()
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("connection", "keep-alive", "transfer-encoding", "content-length")}
                if body is not None:
                    headers["Content-Length"] = str(len(body))
                try:
                    upstream = http.client.HTTPConnection("127.0.0.1", proxy.upstream, timeout=120)
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    response = upstream.getresponse()
                    data = response.read()
                    upstream.close()
                except OSError:  # the server is down: so is the client's connection
                    return self._drop_reply()
                if self.command == "POST" and self.path.split("?")[0].endswith("/runs/create") \
                        and proxy.on_create():
                    return self._drop_reply()  # committed upstream; the reply never arrives
                self.send_response(response.status)
                for name, value in response.getheaders():
                    if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.handle_error = lambda request, address: None  # a client reset mid-request: nothing to report
        self.port = self.server.server_address[1]
        self.uri = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def on_create(self) -> bool:
        """Called after each forwarded ``runs/create``; True loses its reply. This base loses none."""
        return False

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class CommitThenDieProxy(CreateFaultProxy):
    """``arm(callback)``: the next ``runs/create`` is forwarded (the server commits the run), then
    ``callback()`` kills the server and the reply is dropped, as when a server dies between its commit and
    its reply."""

    def __init__(self, upstream_port: int):
        self.armed, self.fired = None, 0
        super().__init__(upstream_port)

    def arm(self, callback) -> None:
        with self.lock:
            self.armed = callback

    def on_create(self) -> bool:
        with self.lock:
            callback, self.armed = self.armed, None
        if callback is None:
            return False
        self.fired += 1
        callback()
        return True
