"""Pausing the cyclic garbage collector while a request builds many objects that hold no cycles.

A 50,000-lot request parses into about 1.3 million objects; checking its lots then allocates some
100,000 more (lists, lot records) and storing the job a few thousand (SQLAlchemy), and every few
hundred allocations the collector runs, now and then over the whole heap (0.2-0.3 s a pass here): in
the accept path that was about 40 % of the time spent checking the lots, and a pass moved into the
store when only the check was paused. None of those objects can be part of a cycle (they are JSON
values and records of them); once the request ends they are freed by reference counting, before the
collector looks at the whole heap again.

The pause is process-wide, so it is counted: the collector stays off while any thread is inside a
pause and is switched back on when the last one leaves (unless it was off before the first). Reference
counting frees memory as usual meanwhile; only cycles wait, for a fraction of a second.
"""
from __future__ import annotations

import contextlib
import gc
import threading
from typing import Iterator

_lock = threading.Lock()
_depth = 0
_resume = False


@contextlib.contextmanager
def paused() -> Iterator[None]:
    global _depth, _resume
    with _lock:
        if _depth == 0:
            _resume = gc.isenabled()
            gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _resume:
                gc.enable()
