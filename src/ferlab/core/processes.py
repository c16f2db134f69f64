"""Process lifetimes: is a PID alive, and child processes that end with their parent.

Every kind of worker ferlab starts (sweep workers, `serve --workers` processes) calls
`die_with_parent` first thing, so a parent killed with -9 never leaves workers behind
holding a port, a GPU or a study trial.

Depends on: the standard library.
"""

from __future__ import annotations

import os
import threading
import time


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def die_with_parent(parent: int, poll_seconds: float = 1.0) -> None:
    """End this process when `parent` is gone (even after kill -9).

    Linux: the kernel sends SIGTERM the moment the parent dies (PR_SET_PDEATHSIG), so the
    worker shuts down through its own SIGTERM handling. Everywhere, and for a parent that
    died before prctl took effect, a daemon thread polls and exits hard (status 3)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass

    def watch() -> None:
        while os.getppid() == parent and alive(parent):
            time.sleep(poll_seconds)
        os._exit(3)

    threading.Thread(target=watch, daemon=True, name="die-with-parent").start()
