"""The per-chunk time budget: a block of chunks that decides for too long is given up.

Why this design. A stage decides a block of chunks in one call (vectorised for the enhanced
stage, one event loop of requests for the network stages), in the step's own thread. Python
cannot kill a thread, and the alternatives cost more than they save: a worker process per block
would have to re-load the catalog index and re-open the model and database clients every time,
and a worker *thread* that overran would keep burning a core (or keep its event loop running)
after it had been abandoned, while the next block ran beside it.

So the block runs where it always ran, and a timer interrupts it: at the deadline the timer
raises :class:`ChunkTimeBudgetExceeded` *in the deciding thread* (CPython's documented
``PyThreadState_SetAsyncExc``). The exception arrives at the thread's next Python bytecode, so
pure-Python loops and an event loop between callbacks stop at once; a single C call (one regex
match, one numpy product) is not interrupted but ends first, which is why text handling must be
linear-time and fields size-limited (issue 10, item 2). No write happens for an interrupted block,
so nothing half-decided is stored; its chunks are named as out of time and can be re-run alone.

The budget is per chunk (``MATCHING_CHUNK_TIME_BUDGET_SECONDS``, 0 turns it off); a block of ``n``
chunks gets ``n`` times the budget, because the block is decided as a whole.
"""

from __future__ import annotations

import ctypes
import threading
from types import TracebackType

REFIRE_S = 0.05
"""How often the interruption is repeated until the deciding thread has left the block. Short,
because in a busy event loop most attempts land inside a callback, where asyncio logs and drops
them: at 0.5 s an unlucky run of ten such attempts kept a block going five seconds past its
deadline. The timer only runs after a deadline has passed, so this costs nothing otherwise."""


class ChunkTimeBudgetExceeded(BaseException):
    """Raised in the deciding thread at its deadline.

    A ``BaseException`` so that no library's ``except Exception`` mistakes it for its own error
    and carries on; only the stage loop catches it.
    """


class Deadline:
    """``with Deadline(seconds):`` interrupts this thread with :class:`ChunkTimeBudgetExceeded`.

    ``seconds <= 0`` means no deadline. Once the body has left the ``with``, the timer can no
    longer fire: firing and leaving take the same lock, and an exception fired just before the
    exit is delivered inside ``__exit__``, i.e. still within the ``with``.
    """

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.fired = False
        self._lock = threading.Lock()
        self._left = False
        self._thread_id = 0
        self._timer: threading.Timer | None = None

    def __enter__(self) -> Deadline:
        self._thread_id = threading.get_ident()
        if self.seconds > 0:
            self._timer = threading.Timer(self.seconds, self._fire)
            self._timer.daemon = True
            self._timer.start()
        return self

    def _fire(self) -> None:
        with self._lock:
            if self._left:
                return
            self.fired = True
            ctypes.pythonapi.PyThreadState_SetAsyncExc(
                ctypes.c_ulong(self._thread_id), ctypes.py_object(ChunkTimeBudgetExceeded)
            )
            # Fire again until the thread has left: an exception that lands inside an asyncio
            # callback is logged and dropped by the event loop, the next one lands elsewhere.
            self._timer = threading.Timer(REFIRE_S, self._fire)
            self._timer.daemon = True
            self._timer.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        with self._lock:
            self._left = True
            timer = self._timer
        if timer is not None:
            timer.cancel()
