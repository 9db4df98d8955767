"""A webhook subscriber for the tests: a local HTTP server that keeps every POST it gets
(signature header, body) and answers 204, or 500 while ``Receiver.fail`` is set."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer


class Receiver(BaseHTTPRequestHandler):
    received: list[tuple[str, bytes]] = []
    fail = False

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((self.headers["X-CLM-Signature"], body))
        self.send_response(500 if type(self).fail else 204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def receiving() -> Iterator[str]:
    """The receiver served on a free port, emptied and answering 204; yields its URL."""
    Receiver.received = []
    Receiver.fail = False
    server = HTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        server.shutdown()
