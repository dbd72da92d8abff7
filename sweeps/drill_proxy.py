"""The fault drill's loopback HTTP proxy: forwards to the tracking server and, once armed, lets the server
commit a ``runs/create`` and die before its reply leaves."""
from __future__ import annotations

import socket
import threading


class CommitThenDieProxy:
    """A loopback HTTP proxy in front of the tracking server (threads). ``arm(callback)``: the next
    ``runs/create`` is forwarded (the server commits the run), then ``callback()`` kills the server and
    the reply is dropped, as when a server dies between its commit and its reply."""

    def __init__(self, upstream_port: int):
        import http.client
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.upstream, self.armed, self.fired = upstream_port, None, 0
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def forward(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("connection", "keep-alive", "transfer-encoding")}
                try:
                    upstream = http.client.HTTPConnection("127.0.0.1", proxy.upstream, timeout=120)
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    response = upstream.getresponse()
                    data = response.read()
                    upstream.close()
                except OSError:  # the server is down: so is the client's connection
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                callback = None
                if self.command == "POST" and self.path.split("?")[0].endswith("/runs/create"):
                    with proxy.lock:
                        callback, proxy.armed = proxy.armed, None
                if callback is not None:
                    proxy.fired += 1
                    callback()  # the run is committed; the server dies before the reply leaves
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
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
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def arm(self, callback) -> None:
        with self.lock:
            self.armed = callback

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
