"""How our processes end: on the signals that stop one gracefully, and with no orphans: a child process asks the
kernel for a signal when its parent dies, even by kill -9 (prctl(2)'s PR_SET_PDEATHSIG, Linux only), so that
nothing lives on holding a port, a socket or jobs after its parent is gone."""

import ctypes
import signal

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)  # a supervisor's stop, a terminal's Ctrl-C
PR_SET_PDEATHSIG = 1


def end_with_parent(signum: int = signal.SIGTERM) -> None:
    """Have `signum` sent to this process when its parent dies. A parent that died before this call is not seen:
    callers that must know compare `os.getppid()` with the parent's pid afterwards."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux
        pass
