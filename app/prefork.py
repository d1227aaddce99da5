"""Several web processes on one port (WEB_PROCESSES): the parent binds the socket, forks the processes that serve it,
and stops them all when it is told to, or when one of them ends, so that a supervisor (honcho, Docker) sees one
process that stops as a whole. Each process runs its own Python, so together they use more than one core; what they
share (jobs, keys, limits, counts) lives in the database and Redis, as across machines.

The parent forks after start-up has imported everything (`gc.freeze()` first, so the pages stay shared) and before
any thread or connection exists that a child could not use: a child only drops the database connections that
start-up may have opened (redis-py makes new ones itself in a new process)."""

import os
import signal
import socket
import sys
import traceback
from collections.abc import Callable

from app.orphans import STOP_SIGNALS, end_with_parent


def listening_socket(host: str, port: int) -> socket.socket:
    """The port, bound and listening as waitress binds it (reused address, its backlog of 1024)."""
    family, kind, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(address)
    sock.listen(1024)
    return sock


def run(processes: int, serve: Callable[[], None]) -> int:
    """Fork `processes` children that each call `serve()` (which returns once the process is told to stop), and
    wait: a stop signal is passed on to every child; a child that ends by itself stops the others. Returns the exit
    status for the parent: 0 when every child stopped because it was told to."""
    stopping = False

    def stop(*_) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            _signal(pid, signal.SIGTERM)

    # Blocked while forking: a child must not run the parent's handler before it has set its own.
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    children = [_fork(serve) for _ in range(processes)]
    for signum in STOP_SIGNALS:
        signal.signal(signum, stop)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    status = 0
    while children:
        pid, code = os.wait()
        children.remove(pid)
        if not stopping:
            print(f"llamalith: web process {pid} ended ({_described(code)}); stopping the others", flush=True)
            status = 1
            stop()
    return status


def _fork(serve: Callable[[], None]) -> int:
    parent = os.getpid()
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        for signum in STOP_SIGNALS:
            signal.signal(signum, signal.SIG_DFL)  # until serve() sets its own
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        _stop_with(parent)
        serve()
        code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)  # never return into the parent's code, nor run its exit handlers


def _stop_with(parent: int) -> None:
    """Have the kernel send SIGTERM (a graceful stop) when the parent dies, even by kill -9, so that no orphan keeps
    serving the port that a restarted web tier needs."""
    end_with_parent()
    if os.getppid() != parent:  # it died before prctl took effect
        raise SystemExit("llamalith: the web parent has ended")


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:  # it has ended, and is waiting to be reaped
        pass


def _described(code: int) -> str:
    if os.WIFSIGNALED(code):
        return f"killed by {signal.Signals(os.WTERMSIG(code)).name}"
    return f"exit status {os.waitstatus_to_exitcode(code)}"
