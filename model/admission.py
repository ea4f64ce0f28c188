"""One budget for the whole server's decoding and inference: at most ``slots`` analyses run at once, across every
session; the others wait in arrival order. Pure Python, no Streamlit: the app holds one :class:`AnalysisQueue` for
the server (``st.cache_resource``) and says "busy, yours is next" to a visitor who has to wait.

Why a count and not a byte budget: the costliest admitted image is known (``python -m bench hostile``), so slots =
(memory the server may use - its idle size) // that cost keeps any mix of uploads within the memory, and a queue
turns what used to be a server over its memory into a visitor's wait of a few seconds.
"""

from __future__ import annotations

import threading
from collections import deque
from contextlib import contextmanager


class AnalysisQueue:
    """At most ``slots`` holders at once; waiters are admitted first come, first served. A waiter that gives up (an
    exception while waiting) leaves the queue without taking a slot."""

    def __init__(self, slots: int):
        if slots < 1:
            raise ValueError(f"slots must be at least 1, got {slots}")
        self.slots = slots
        self._running = 0
        self._waiting: deque[object] = deque()
        self._changed = threading.Condition()

    @property
    def busy(self) -> bool:
        """Whether a new arrival would have to wait now."""
        with self._changed:
            return self._running >= self.slots or bool(self._waiting)

    @property
    def waiting(self) -> int:
        with self._changed:
            return len(self._waiting)

    @contextmanager
    def slot(self, timeout: float | None = None):
        """Hold one slot for the ``with`` block, waiting in line for it (``TimeoutError`` after ``timeout`` s)."""
        me = object()
        with self._changed:
            self._waiting.append(me)
            try:
                admitted = self._changed.wait_for(lambda: self._running < self.slots and self._waiting[0] is me, timeout)
                if not admitted:
                    raise TimeoutError("no analysis slot became free in time")
            except BaseException:
                self._waiting.remove(me)
                self._changed.notify_all()
                raise
            self._waiting.popleft()
            self._running += 1
            self._changed.notify_all()
        try:
            yield
        finally:
            with self._changed:
                self._running -= 1
                self._changed.notify_all()
