"""WEB_PROCESSES: several forked web processes on one port, through a real `python wsgi.py`: they share the load and
the database, stop together on SIGTERM, a process that dies takes the others down so that the supervisor sees it,
none outlives the parent, and the stream caps per key and per user hold across them."""

import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

import psutil
import pytest
import requests

from tests.factories import NAME
from tests.stack import wait_for
from tests.test_limits import more_keys


def start_web(stack, processes: int = 2) -> tuple[subprocess.Popen, list[psutil.Process]]:
    """The web parent and its serving children, once it answers."""
    web = stack.start("web", "wsgi.py", env={"WEB_PROCESSES": str(processes)})
    wait_for(lambda: requests.get(stack.url + "/healthz", timeout=1).ok)
    wait_for(lambda: len(psutil.Process(web.pid).children()) == processes)
    return web, psutil.Process(web.pid).children()


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


@pytest.mark.same_on_postgres
def test_two_web_processes_share_the_port_the_load_and_the_database(stack):
    web, children = start_web(stack)
    before = [cpu_seconds(child) for child in children]

    def submit(n: int) -> int:
        return stack.submit(user_input=f"question {n}")["job_id"]

    with ThreadPoolExecutor(16) as pool:  # concurrent writers from both processes: none refused, none lost
        ids = list(pool.map(submit, range(160)))
    assert len(set(ids)) == 160
    assert stack.query("SELECT count(*) FROM jobs")[0][0] == 160
    with ThreadPoolExecutor(16) as pool:
        assert all(pool.map(lambda job_id: stack.get(f"/api/jobs/{job_id}")["status"] == "queued", ids))
    after = [cpu_seconds(child) for child in children]
    assert all(later - earlier > 0.05 for earlier, later in zip(before, after)), "a web process served nothing"
    assert "Llamalith is listening on" in stack.log_text() and "(2 web processes)" in stack.log_text()

    web.send_signal(signal.SIGTERM)
    assert web.wait(timeout=20) == 0
    assert not any(child.is_running() and child.status() != psutil.STATUS_ZOMBIE for child in children)
    assert stack.log_text().count("Llamalith web stopped") == 2


def test_a_web_process_that_dies_stops_the_others_and_the_parent_fails(stack):
    web, children = start_web(stack)
    children[0].kill()
    assert web.wait(timeout=20) != 0  # honcho or the container's restart policy see the web process end
    wait_for(lambda: not children[1].is_running() or children[1].status() == psutil.STATUS_ZOMBIE)
    assert f"web process {children[0].pid} ended (killed by SIGKILL); stopping the others" in stack.log_text()
    time.sleep(0.2)
    with pytest.raises(requests.ConnectionError):
        requests.get(stack.url + "/healthz", timeout=2)


def test_the_web_processes_stop_when_their_parent_is_killed(stack):
    web, children = start_web(stack)
    web.kill()
    web.wait()
    psutil.wait_procs(children, timeout=20)  # each stops gracefully on the SIGTERM the kernel sends it
    assert not any(child.is_running() for child in children)
    with pytest.raises(requests.ConnectionError):
        requests.get(stack.url + "/healthz", timeout=2)


def test_the_stream_caps_per_key_and_per_user_hold_across_the_processes(stack):
    stack.env.update(SSE_MAX_STREAMS_PER_KEY="3", SSE_MAX_STREAMS_PER_USER="4")
    start_web(stack)
    job = stack.submit(user_input="Nobody works on this.")  # no worker: it stays queued and its streams stay open
    url = f"{stack.url}/api/jobs/{job['job_id']}/events"
    with ExitStack() as held:

        def open_stream(_) -> int:
            return held.enter_context(requests.get(url, headers=stack.headers, stream=True, timeout=30)).status_code

        with ThreadPoolExecutor(16) as pool:  # at once: the kernel hands them to both processes
            statuses = list(pool.map(open_stream, range(16)))
        assert statuses.count(200) == 3 and statuses.count(429) == 13
        web_key = more_keys(stack, NAME, 1)[0]  # the same user, another key: one more, then the user's cap
        assert [requests.get(url, headers=web_key, stream=True, timeout=30).status_code for _ in range(2)] == [200, 429]
