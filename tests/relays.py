"""An HTTP relay in front of a test's web process: each request goes on whole, and its response comes back only
once it is complete, as through a reverse proxy with buffering on (an event stream gets through only when it
ends). tests/test_proxy.py adds the X-Forwarded headers nginx sends; tests/ui/test_ui_streaming.py uses it as is."""

import http.client
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


class Forwarder(BaseHTTPRequestHandler):
    upstream: tuple[str, int]

    def upstream_headers(self) -> dict[str, str]:
        return {name: value for name, value in self.headers.items() if name.lower() not in HOP_BY_HOP}

    def forward(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        upstream = http.client.HTTPConnection(*self.upstream, timeout=300)
        try:
            upstream.request(self.command, self.path, body=body, headers=self.upstream_headers())
            answer = upstream.getresponse()
            content = answer.read()
            self.send_response(answer.status)
            for name, value in answer.getheaders():
                if name.lower() not in HOP_BY_HOP | {"content-length"}:
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)
        finally:
            upstream.close()

    do_GET = do_POST = forward

    def log_message(self, *args) -> None:
        pass


@contextmanager
def relay(url: str, forwarder: type[Forwarder] = Forwarder) -> Iterator[str]:
    """`url` (a running web process's base URL) as the relay serves it, while the block runs."""
    upstream = urlsplit(url)
    handler = type("ToUpstream", (forwarder,), {"upstream": (upstream.hostname, upstream.port)})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}{upstream.path}"
    finally:
        server.shutdown()
        server.server_close()
