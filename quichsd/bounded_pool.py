"""A fixed number of threads, started on demand and kept, for `quichsd server`'s handshakes.

The caller takes a slot (`wait_free`) before it takes work (accept()), so what cannot be
served yet waits where it came from (the listener's backlog) instead of in a queue of ours
or on a thread of its own. `run` hands the work to an idle thread, or starts one while fewer
than `size` exist; a thread that cannot be started (RuntimeError: the process or user limit,
no memory for a stack) refuses that one piece of work and leaves the pool as it was.
"""
from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class BoundedPool:
    def __init__(self, size: int, job: Callable[..., None], name: str = "pool") -> None:
        if size < 1:
            raise ValueError("a pool needs at least one thread")
        self.size = size
        self.job = job
        self.name = name
        self._free = threading.Semaphore(size)  # one per piece of work being done
        self._lock = threading.Condition()
        self._work: deque[tuple[Any, ...]] = deque()
        self._idle = 0  # threads waiting for work
        self._threads = 0
        self._closed = False

    @property
    def threads(self) -> int:
        with self._lock:
            return self._threads

    def wait_free(self, timeout: float) -> bool:
        """Take a slot for the next piece of work; False if none came free in `timeout`."""
        return self._free.acquire(timeout=timeout)

    def release(self) -> None:
        """Give back a slot taken with wait_free() and not passed to run()."""
        self._free.release()

    def run(self, *args: Any) -> bool:
        """job(*args) on a pool thread, with the slot the caller took. False: no thread could
        be started for it (the slot is given back; the caller disposes of the work)."""
        with self._lock:
            if len(self._work) < self._idle:
                self._work.append(args)
                self._lock.notify()
                return True
            self._threads += 1
            number = self._threads
        thread = threading.Thread(target=self._loop, args=(args,), name=f"{self.name} #{number}", daemon=True)
        try:
            thread.start()
        except RuntimeError as exc:  # "can't start new thread": this one piece of work is refused
            with self._lock:
                self._threads -= 1
            self._free.release()
            log.debug("%s: no new thread: %s", self.name, exc)
            return False
        return True

    def close(self) -> None:
        """Let the idle threads end (the busy ones end after their work)."""
        with self._lock:
            self._closed = True
            self._lock.notify_all()

    def _loop(self, args: tuple[Any, ...]) -> None:
        try:
            while True:
                try:
                    self.job(*args)
                except Exception:  # the job's own handling failed: log it, keep the thread
                    log.exception("%s: job failed", self.name)
                finally:
                    self._free.release()
                del args  # nothing of the last piece of work is kept while idle
                with self._lock:
                    self._idle += 1
                    try:
                        while not self._work and not self._closed:
                            self._lock.wait()
                        if not self._work:
                            return
                        args = self._work.popleft()
                    finally:
                        self._idle -= 1
        finally:
            with self._lock:
                self._threads -= 1
