"""Limits that hold under abuse, against real processes: event streams capped below waitress's threads and per user,
idle sockets and huge bodies, bad resume ids and Redis outages without busy loops, per-key queues under concurrent
submits, keys per user, concurrent guesses."""

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from contextlib import ExitStack

import psutil
import pytest
import requests
from sqlalchemy import func, select

from app.follow import TICK_SECONDS as KEEPALIVE_SECONDS
from app.extensions import db
from app.keys import TooManyKeys, create_key
from app.models import ApiKey, User
from tests.factories import NAME, add_user
from tests.stack import CSRF_TOKEN, Stack, free_port, start_redis, wait_for

PASSWORD = "a long password"


def cpu_seconds(process) -> float:
    """The CPU time of `process` and the web processes it forked (WEB_PROCESSES)."""
    parent = psutil.Process(process.pid)
    return sum(times.user + times.system for times in
               (member.cpu_times() for member in [parent, *parent.children(recursive=True)]))


def quick(url: str, headers: dict | None = None) -> float:
    """Seconds a GET took; it must succeed."""
    started = time.monotonic()
    assert requests.get(url, headers=headers, timeout=5).ok
    return time.monotonic() - started


@pytest.mark.same_on_postgres
def test_streams_over_the_cap_get_429_and_the_server_keeps_answering(stack):
    stack.env.update(SSE_MAX_STREAMS="12", SSE_MAX_STREAMS_PER_KEY="8", SSE_MAX_STREAMS_PER_USER="12")
    stack.start_web()
    job = stack.submit(user_input="Nobody works on this.")  # no worker: it stays queued and its stream stays open
    url = f"{stack.url}/api/jobs/{job['job_id']}/events"
    opened: list[requests.Response] = []
    lock = threading.Lock()

    def open_stream(_) -> int:
        response = requests.get(url, headers=stack.headers, stream=True, timeout=30)
        with lock:
            opened.append(response)
        return response.status_code

    try:
        with ThreadPoolExecutor(60) as pool:
            statuses = list(pool.map(open_stream, range(60)))
        assert statuses.count(200) == 8 and statuses.count(429) == 52
        assert quick(stack.url + "/healthz") < 1
        assert quick(f"{stack.url}/api/jobs/{job['job_id']}", stack.headers) < 1
        other = stack.user("other")
        assert requests.get(url.replace(str(job["job_id"]), str(job["job_id"])), headers=other, stream=True,
                            timeout=10).status_code == 404  # not theirs: refused before taking a slot
    finally:
        for response in opened:
            response.close()
    # A closed stream gives its slot back when a keep-alive write finds the client gone: usually the second one
    # after the close, later on a loaded machine.
    wait_for(lambda: requests.get(url, headers=stack.headers, stream=True, timeout=10).status_code == 200,
             timeout=6 * KEEPALIVE_SECONDS)


def test_idle_sockets_do_not_stop_healthz_and_a_huge_body_is_refused_unread(stack):
    stack.start_web()
    port = int(stack.env["PORT"])
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(150)]
    try:
        assert quick(stack.url + "/healthz") < 1
    finally:
        for connection in idle:
            connection.close()

    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(f"POST /chat/api/submit HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                           f"Authorization: {stack.headers['Authorization']}\r\n"
                           f"Content-Length: {64 * 1024 * 1024}\r\n\r\n".encode() + b"x" * 1024)
        assert connection.recv(100).startswith(b"HTTP/1.1 413")  # answered after 1 kB of the 64 MB


def test_a_bad_last_event_id_is_400_and_costs_nothing_after(stack):
    process = stack.start_web()
    job = stack.submit(user_input="Nobody works on this.")
    url = f"{stack.url}/api/jobs/{job['job_id']}/events"
    for bad in ["18446744073709551616-0", "1-18446744073709551616", "١٢٣-٠", "1-0\n", "1-0 ", "abc", "-1-0", ""]:
        header = requests.get(url, headers={**stack.headers, "Last-Event-ID": bad}, timeout=10) \
            if bad.isascii() and bad.strip() == bad and bad else None
        query = requests.get(url, params={"last_event_id": bad or "x"}, headers=stack.headers, timeout=10)
        for answer in filter(None, (header, query)):
            assert answer.status_code == 400 and answer.json()["error"]["code"] == "invalid_request", bad
    before = cpu_seconds(process)
    time.sleep(2)
    assert cpu_seconds(process) - before < 0.2


@pytest.mark.same_on_postgres
@pytest.mark.slow
def test_open_streams_back_off_while_redis_is_down(environ, tmp_path):
    (tmp_path / "private-redis").mkdir()
    redis_process, redis_socket = start_redis(tmp_path / "private-redis")
    stack = Stack({**environ, "REDIS_URL": f"unix://{redis_socket}"}, tmp_path)
    streams = []
    try:
        web = stack.start_web()
        job = stack.submit(user_input="Nobody works on this.")
        streams = [requests.get(f"{stack.url}/api/jobs/{job['job_id']}/events", headers=stack.headers, stream=True,
                                timeout=30) for _ in range(5)]
        redis_process.terminate()
        redis_process.wait()
        time.sleep(1)
        before = cpu_seconds(web)
        time.sleep(4)
        assert cpu_seconds(web) - before < 0.5  # five streams, Redis gone: they wait, they do not spin
        assert quick(stack.url + "/healthz") < 1
    finally:
        for stream in streams:
            stream.close()
        stack.stop()
        redis_process.terminate()


@pytest.mark.same_on_postgres
@pytest.mark.slow
def test_a_cancel_after_a_redis_blip_stops_the_job_within_a_token(environ, tmp_path):
    (tmp_path / "private-redis").mkdir()
    redis_process, redis_socket = start_redis(tmp_path / "private-redis")
    stack = Stack({**environ, "REDIS_URL": f"unix://{redis_socket}"}, tmp_path)
    try:
        stack.start_web()
        stack.start_worker()
        # The base model writes on to its 2000 tokens (the default model's greedy story ends within 5 s on some CPUs).
        job_id = stack.submit(user_input="Write a very long story about the sea.", max_tokens=2000,
                              temperature=0, model="gemma3-270m")["job_id"]
        stack.wait_job(job_id, until=lambda job: job["status"] == "processing" and job["result"])
        redis_process.terminate()
        redis_process.wait()
        time.sleep(1.5)  # the worker keeps generating; its token writer backs off
        redis_process, _ = start_redis(redis_socket.parent)
        seen = len(stack.get(f"/api/jobs/{job_id}")["result"])
        stack.wait_job(job_id, timeout=30, until=lambda job: len(job["result"] or "") > seen)  # tokens flow again
        answer = requests.post(f"{stack.url}/api/jobs/{job_id}/cancel", headers=stack.headers, timeout=30)
        assert answer.status_code == 200
        job = stack.wait_job(job_id, timeout=30)
        assert job["status"] == "cancelled" and job["usage"]["completion_tokens"] < 2000
    finally:
        stack.stop()
        redis_process.terminate()


def test_a_key_may_have_only_so_many_jobs_waiting(stack):
    stack.env["MAX_QUEUED_PER_KEY"] = "3"
    stack.start_web()
    for n in range(3):
        stack.submit(user_input=f"Question {n}")
    answer = requests.post(stack.url + "/api/submit", headers=stack.headers, json={"user_input": "One more"},
                           timeout=10)
    assert answer.status_code == 429 and answer.json()["error"]["code"] == "too_many_queued"
    assert int(answer.headers["Retry-After"]) > 0
    assert requests.post(stack.url + "/api/submit", headers=stack.user("other"), json={"user_input": "Mine"},
                         timeout=10).status_code == 202  # the cap is per key


def test_concurrent_submits_with_one_key_never_pass_its_max_queued(stack):
    """20 at once, spread over two web processes: each counts the key's waiting jobs under the same lock."""
    stack.start_web()
    second = {**stack.env, "PORT": str(free_port())}
    stack.start("web", "wsgi.py", env=second)
    urls = [stack.url, stack.url.replace(stack.env["PORT"], second["PORT"])]
    wait_for(lambda: requests.get(urls[1] + "/healthz", timeout=1).ok)
    key = stack.cli("keys", "create", "capped", "--user", NAME, "--max-queued", "3").splitlines()[-1]
    barrier = threading.Barrier(20)

    def submit(n: int) -> tuple[int, str | None]:
        barrier.wait()
        answer = requests.post(urls[n % 2] + "/api/submit", headers={"Authorization": f"Bearer {key}"},
                               json={"user_input": f"Question {n}"}, timeout=60)
        return answer.status_code, answer.json()["error"] and answer.json()["error"]["code"]

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(submit, range(20)))
    assert answers.count((202, None)) == 3 and answers.count((429, "too_many_queued")) == 17, answers
    assert stack.query("SELECT count(*) FROM jobs") == [(3,)]


def more_keys(stack: Stack, user: str, count: int) -> list[dict[str, str]]:
    """Headers of `count` more API keys of the stack's user `user`."""
    with stack.app.app_context():
        user_id = db.session.scalar(select(User.id).where(User.name == user))
        keys = [create_key(f"{user}-key-{n}", user_id) for n in range(count)]
        db.engine.dispose()
    return [{"Authorization": f"Bearer {key}"} for key in keys]


def test_one_user_with_many_keys_takes_only_their_share_of_the_streams(stack):
    stack.env.update(SSE_MAX_STREAMS="12", SSE_MAX_STREAMS_PER_KEY="8")  # a user's share: a quarter, 3
    stack.start_web()
    keys = [stack.user("many")] + more_keys(stack, "many", 2)
    job = requests.post(stack.url + "/api/submit", headers=keys[0], json={"user_input": "Nobody works on this."},
                        timeout=10).json()  # no worker: it stays queued and its streams stay open
    url = f"{stack.url}/api/jobs/{job['job_id']}/events"
    with ExitStack() as held:
        for headers in keys:
            held.enter_context(requests.get(url, headers=headers, stream=True, timeout=30)).raise_for_status()
        refused = requests.get(url, headers=keys[0], stream=True, timeout=30)
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "too_many_streams"
        theirs = stack.submit(user_input="Nobody works on this either.")
        assert held.enter_context(requests.get(f"{stack.url}/api/jobs/{theirs['job_id']}/events",
                                               headers=stack.headers, stream=True, timeout=30)).status_code == 200


def test_a_user_may_have_only_so_many_keys(app, runner, signed_in, user):
    for n in range(app.settings.max_keys_per_user - 1):
        create_key(f"key-{n}", user.id)
    page = signed_in.post("/chat/keys", data={"key-name": "the-last", "csrf_token": signed_in.csrf_token("/chat/keys")})
    assert page.status_code == 200 and "llk_" in page.text
    refused = signed_in.post("/chat/keys", data={"key-name": "one-more",
                                                 "csrf_token": signed_in.csrf_token("/chat/keys")})
    assert refused.status_code == 422 and f"already has {app.settings.max_keys_per_user} API keys" in refused.text
    cli = runner.invoke(args=["keys", "create", "one-more", "--user", user.name])
    assert cli.exit_code == 1 and "MAX_KEYS_PER_USER" in cli.output
    with pytest.raises(TooManyKeys):
        create_key("one-more", user.id)
    assert db.session.scalar(select(func.count()).select_from(ApiKey)) == app.settings.max_keys_per_user
    assert create_key("theirs", add_user("bob").id)  # the cap is per user


def test_concurrent_wrong_passwords_are_checked_at_most_the_limit(stack):
    stack.env["LOGIN_ATTEMPTS"] = "5"
    stack.start_web()
    stack.user("grace", PASSWORD)
    session = requests.Session()
    token = CSRF_TOKEN.search(session.get(stack.url + "/login", timeout=10).text).group(1)

    def guess(n: int) -> int:
        return session.post(stack.url + "/login", data={"name": "grace", "password": f"guess {n}",
                                                        "csrf_token": token}, timeout=60).status_code

    with ThreadPoolExecutor(30) as pool:
        statuses = list(pool.map(guess, range(30)))
    assert statuses.count(200) == 5 and statuses.count(429) == 25  # 200: "Wrong name or password."


def test_a_copied_session_cookie_stops_working_after_logout_and_after_a_password_change(stack):
    stack.start_web()
    stack.user("heidi", PASSWORD)
    for end_it in ("logout", "passwd"):
        browser = stack.signed_in("heidi", PASSWORD)
        copy = requests.Session()
        copy.cookies.update(browser.cookies)
        assert copy.get(stack.url + "/conversations", allow_redirects=False, timeout=10).status_code == 200
        if end_it == "logout":
            browser.post(stack.url + "/logout", timeout=10)
        else:
            stack.cli("users", "passwd", "heidi", "--password-stdin", input=PASSWORD + "\n")
        assert copy.get(stack.url + "/conversations", allow_redirects=False, timeout=10).status_code == 302


def test_revoking_a_key_ends_its_open_streams(stack):
    stack.start_web()
    headers = stack.user("ivan")
    job = requests.post(stack.url + "/api/submit", headers=headers, json={"user_input": "Nobody works on this."},
                        timeout=10).json()
    with requests.get(f"{stack.url}/api/jobs/{job['id']}/events", headers=headers, stream=True, timeout=30) as stream:
        stack.cli("keys", "revoke", "ivan-key")
        started = time.monotonic()
        lines = list(stream.iter_lines(decode_unicode=True))  # the stream ends by itself
    assert time.monotonic() - started < 15
    assert "event: error" in lines and any('"unauthorized"' in line for line in lines)
