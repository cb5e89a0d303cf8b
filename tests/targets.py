"""Local HTTP servers that behave like the sites users monitor, broken ones included.

One threaded server on 127.0.0.1 serves every behaviour by path, so a test can
point monitors at http://127.0.0.1:PORT/<behaviour>. It also counts the requests
each path received, for tests that must show a check ran (or did not run).
"""

import gzip
import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HUGE_BODY_BYTES = 200 * 1024 * 1024


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep test output readable
        pass

    def _send(self, status, body=b"", headers=()):
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self):
        self.do_GET()

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        self.server.last_post = (self.path, self.rfile.read(length), dict(self.headers))
        self.do_GET()

    def do_GET(self):
        path = self.path.split("?")[0]
        self.server.hits[path] += 1
        if path == "/ok":
            self._send(200, b"<html><body>All systems operational</body></html>", [("Content-Type", "text/html")])
        elif path == "/switch":
            # Answers whatever the test last set: a site that goes down and up.
            self._send(self.server.switch_status, b"switch")
        elif path == "/status600":
            # Not a valid HTTP status; seen from broken proxies.
            self.wfile.write(b"HTTP/1.1 600 Broken\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        elif path == "/record":
            self.server.recorded.append({k.lower(): v for k, v in self.headers.items()})
            self._send(200, b"recorded")
        elif path == "/error":
            self._send(500, b"Internal Server Error")
        elif path.startswith("/slow/"):
            time.sleep(float(path.rsplit("/", 1)[1]))
            self._send(200, b"finally")
        elif path == "/moved":
            self._send(301, b"", [("Location", "/ok")])
        elif path == "/loop":
            self._send(302, b"", [("Location", "/loop")])
        elif path == "/gzip-forbidden":
            body = gzip.compress(b"<html>Fatal error: database connection lost</html>" * 20)
            self._send(200, body, [("Content-Encoding", "gzip"), ("Content-Type", "text/html")])
        elif path == "/huge":
            self.send_response(200)
            self.send_header("Content-Length", str(HUGE_BODY_BYTES))
            self.end_headers()
            chunk = b"x" * 65536
            try:
                for _ in range(HUGE_BODY_BYTES // len(chunk)):
                    self.wfile.write(chunk)
                    self.server.huge_bytes_sent += len(chunk)
            except (BrokenPipeError, ConnectionResetError):
                pass
        elif path == "/hang":
            # Accepts the request and never answers, like a stuck upstream.
            self.server.hanging.wait(120)
            self.close_connection = True
        else:
            self._send(404, b"not found")


class QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        pass  # clients that hang up early (timeouts, capped bodies) are expected


class Targets:
    def __init__(self):
        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.hits = Counter()
        self.server.huge_bytes_sent = 0
        self.server.hanging = threading.Event()
        self.server.last_post = None
        self.server.switch_status = 200
        self.server.recorded = []
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def port(self):
        return self.server.server_address[1]

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def hits(self):
        return self.server.hits

    @property
    def huge_bytes_sent(self):
        return self.server.huge_bytes_sent

    def close(self):
        self.server.hanging.set()
        self.server.shutdown()
        self.server.server_close()


def refused_port():
    """A local port with nothing listening."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
