"""Webhooks against a local receiver and real processes: one verified POST per ended job, retried after a 500,
and callback URLs the server must not call refused at submit."""

import hashlib
import hmac
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from app import webhooks
from tests.stack import free_port, wait_for


class Receiver(ThreadingHTTPServer):
    """Records each POST; answers 500 to the first `failures` of them, then 200."""

    def __init__(self, failures: int):
        self.calls: list[tuple[dict, bytes, int]] = []
        self.failures = failures
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = 500 if len(server.calls) < server.failures else 200
                server.calls.append((dict(self.headers), body, status))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", free_port()), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"


def verified(secret: str, headers: dict, body: bytes) -> bool:
    fields = dict(part.split("=", 1) for part in headers["X-Llamalith-Signature"].split(","))
    expected = hmac.new(secret.encode(), f"{fields['t']}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, fields["v1"])


@pytest.fixture
def receiver():
    server = Receiver(failures=1)
    yield server
    server.shutdown()


def test_an_ended_job_is_posted_once_signed_and_retried_after_a_500(stack, receiver):
    port = receiver.server_address[1]
    stack.env.update(CALLBACK_ALLOWED_HOSTS=f"127.0.0.1:{port}", RECONCILE_INTERVAL="1")
    stack.start_web()
    stack.start_worker()
    secret = stack.query("SELECT webhook_secret FROM api_keys")[0][0]
    job_id = stack.submit(user_input="Say hi.", max_tokens=4, callback_url=receiver.url)["job_id"]
    stack.wait_job(job_id)
    wait_for(lambda: stack.get(f"/api/jobs/{job_id}")["callback"]["status"] == "delivered", timeout=60)

    assert [status for _, _, status in receiver.calls] == [500, 200]
    for headers, body, _ in receiver.calls:
        assert verified(secret, headers, body) and json.loads(body)["status"] == "done"
        assert json.loads(body)["id"] == job_id
    callback = stack.get(f"/api/jobs/{job_id}")["callback"]
    assert (callback["attempts"], callback["last_status"], callback["last_error"]) == (2, 200, None)

    cancelled = stack.submit(user_input="Never mind.", callback_url=receiver.url, session_id="other")
    requests.post(f"{stack.url}/api/jobs/{cancelled['job_id']}/cancel", headers=stack.headers, timeout=10)
    wait_for(lambda: len(receiver.calls) == 3, timeout=30)
    assert json.loads(receiver.calls[2][1])["status"] == "cancelled"


def test_callbacks_the_server_must_not_call_are_refused_at_submit(stack, receiver):
    port = receiver.server_address[1]
    stack.env.update(CALLBACK_ALLOWED_HOSTS=f"127.0.0.1:{port},localhost:{port + 1}")
    stack.start_web()
    for url in (f"http://127.0.0.1:{port + 2}/hook",  # the right host, another port
                f"http://localhost:{port + 1}/hook",  # allowed by name, but it resolves to 127.0.0.1
                "http://169.254.169.254/latest/meta-data", "ftp://127.0.0.1/x", f"http://user:pw@127.0.0.1:{port}/"):
        answer = requests.post(stack.url + "/api/submit", headers=stack.headers, timeout=10,
                               json={"user_input": "hi", "callback_url": url})
        assert answer.status_code == 400 and answer.json()["error"]["code"] == "callback_not_allowed", url
    assert stack.query("SELECT count(*) FROM jobs") == [(0,)]


def test_a_name_that_turns_internal_after_submit_is_refused_at_delivery(app, monkeypatch):
    """DNS may change between submit and delivery: every delivery resolves and checks again."""
    app.settings.callback_allowed_hosts = ["hooks.example.com"]
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, port: [(2, 1, 6, "", ("93.184.216.34", port))])
    webhooks.check_url("https://hooks.example.com/in")
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, port: [(2, 1, 6, "", ("169.254.169.254", port))])
    with pytest.raises(webhooks.CallbackRefused, match="internal address"):
        webhooks.check_url("https://hooks.example.com/in")


def test_the_readme_webhook_example_runs_as_written(stack, receiver):
    import re
    import subprocess

    from config import ROOT

    port = receiver.server_address[1]
    stack.env.update(CALLBACK_ALLOWED_HOSTS=f"127.0.0.1:{port}", RECONCILE_INTERVAL="1")
    stack.start_web()
    stack.start_worker()
    script = re.search(r"```bash\n(curl -s -X POST [^`]*callback_url[^`]*)```", (ROOT / "README.md").read_text()).group(1)
    script = script.replace("http://127.0.0.1:8000/chat", stack.url).replace("127.0.0.1:9000", f"127.0.0.1:{port}")
    key = stack.headers["Authorization"].split()[-1]
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True, timeout=60,
                            env={"KEY": key, "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0 and json.loads(result.stdout)["status"] == "queued", result.stderr
    wait_for(lambda: any(status == 200 for _, _, status in receiver.calls), timeout=120)  # a 500 first, then this
