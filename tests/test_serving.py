"""The web server against abuse, through a real `python wsgi.py`: a flood of idle connections, and bodies refused
from their headers (over their route's limit, or without a key) before they are sent."""

import json
import resource
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest
import requests

from app.serving import MAX_CONNECTIONS, connection_limit, descriptors_needed
from tests.stack import wait_for

FLOOD = 1500


def test_connections_are_limited_to_the_descriptors_the_process_has():
    assert connection_limit(48, descriptors_needed(48)) == MAX_CONNECTIONS
    assert connection_limit(48, 100_000) == MAX_CONNECTIONS
    limited = connection_limit(48, 1024)  # a distribution's usual soft limit, if it cannot be raised
    assert 0 < limited and descriptors_needed(48, limited) <= 1024


@pytest.mark.same_on_postgres
def test_a_connection_flood_after_a_warm_up_leaves_the_web_process_serving(stack):
    stack.env["WEB_PROCESSES"] = "1"  # one waitress process, whose descriptors are counted below
    web = stack.start_web()
    with ThreadPoolExecutor(48) as pool:  # every web thread with its database and Redis connections open
        assert all(pool.map(lambda _: requests.get(stack.url + "/api/jobs", headers=stack.headers, timeout=30).ok,
                            range(200)))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, FLOOD + 500)), hard))
    port = int(stack.env["PORT"])
    idle = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(FLOOD)]
    try:  # waitress takes up to its connection limit, the rest wait in the listen backlog
        wait_for(lambda: web.poll() is not None or psutil.Process(web.pid).num_fds() > MAX_CONNECTIONS, timeout=20)
        time.sleep(0.5)
        assert web.poll() is None, "the web process died under the flood"
    finally:
        for connection in idle:
            connection.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    wait_for(lambda: requests.get(stack.url + "/healthz", timeout=1).ok, timeout=1)
    assert requests.get(stack.url + "/api/jobs", headers=stack.headers, timeout=5).ok  # database and Redis too
    assert web.poll() is None


def raw_request(port: int, head: str) -> tuple[float, bytes]:
    """Sends only `head` (the request line and headers); the seconds until the answer came, and the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        started = time.monotonic()
        connection.sendall(head.encode() + b"\r\n")
        answer = b""
        while chunk := connection.recv(65536):  # the server closes the connection after its answer
            answer += chunk
        return time.monotonic() - started, answer


def status_and_error(answer: bytes) -> tuple[int, dict]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)["error"]


@pytest.mark.same_on_postgres
def test_a_body_over_its_routes_limit_is_refused_before_it_is_sent(stack):
    stack.env.update(MAX_REQUEST_BYTES="2048", BATCH_FILE_MAX_BYTES="4096")
    stack.start_web()
    port, key = int(stack.env["PORT"]), stack.headers["Authorization"]
    took, answer = raw_request(port, f"POST /chat/api/submit HTTP/1.1\r\nHost: x\r\nAuthorization: {key}\r\n"
                                     "Content-Type: application/json\r\nContent-Length: 2000000\r\n")
    assert took < 1
    assert status_and_error(answer) == (413, {
        "code": "too_large", "message": "the body is 2000000 bytes, over the limit of 2048 (MAX_REQUEST_BYTES)"})

    took, answer = raw_request(port, f"POST /chat/v1/files HTTP/1.1\r\nHost: x\r\nAuthorization: {key}\r\n"
                                     "Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 5000\r\n")
    status, error = status_and_error(answer)
    assert took < 1 and status == 413 and error["code"] == "file_too_large" and error["type"]  # OpenAI's shape

    # A chunked body (no Content-Length) is refused once it has grown over the limit, not when it ends.
    took, answer = raw_request(port, f"POST /chat/api/submit HTTP/1.1\r\nHost: x\r\nAuthorization: {key}\r\n"
                                     f"Transfer-Encoding: chunked\r\n\r\n1000\r\n{'x' * 4096}\r\n")
    assert took < 1 and status_and_error(answer)[0] == 413

    # Under its own limit, a batch file larger than MAX_REQUEST_BYTES is taken.
    line = json.dumps({"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {"messages": []}})
    upload = requests.post(stack.url + "/v1/files", headers=stack.headers, data={"purpose": "batch"},
                           files={"file": ("big.jsonl", (line + "\n") * 30)}, timeout=10)
    assert 2048 < int(upload.request.headers["Content-Length"]) < 4096 and upload.status_code == 200, upload.text


@pytest.mark.same_on_postgres
def test_a_body_without_a_key_is_refused_before_it_is_sent(stack):
    stack.start_web()
    port = int(stack.env["PORT"])
    # 45 MB, under BATCH_FILE_MAX_BYTES: only the missing key refuses it, and the client never has to send it.
    took, answer = raw_request(port, "POST /chat/v1/files HTTP/1.1\r\nHost: x\r\nContent-Length: 45000000\r\n"
                                     "Content-Type: multipart/form-data; boundary=b\r\n")
    status, error = status_and_error(answer)
    assert took < 1 and status == 401 and error["code"] == "invalid_api_key"
    took, answer = raw_request(port, "POST /chat/api/submit HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n")
    assert took < 1 and status_and_error(answer)[0] == 401
    # A sign-in form has a body and no key: it is not an API route.
    assert requests.post(stack.url + "/login", data={"name": "x", "password": "y"}, timeout=10).status_code == 400
