"""A test-only crash point, for windows too narrow to hit with a ``kill -9`` from outside.

``GENSERVICE_CRASH_AFTER=<point>`` (read once into ``Settings.crash_after``; unset, and so inert,
everywhere but in the crash-recovery tests) makes the process exit at once with status 137, as a
``kill -9`` would: no cleanup, no commit, no lease released. The points sit between a step that
happened and the record of it:

- ``<kind>_planned``: shards of a stage are planned, nothing is uploaded yet;
- ``<kind>_uploaded``: a shard's file is uploaded, its id not yet recorded;
- ``<kind>_batch_created``: OpenAI created the batch, its id not yet recorded;
- ``<kind>_lines_applied``: a page of a batch's answers is stored, the shard not yet marked collected;

where ``<kind>`` is ``vision`` or ``translation``; and ``lots_expanded``: a job's lots are written out of
their pages in the transaction that starts it, not yet committed.
"""
from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

STEPS = ("planned", "uploaded", "batch_created", "lines_applied")
POINTS = ("lots_expanded",) + tuple(f"{kind}_{step}" for kind in ("vision", "translation") for step in STEPS)
EXIT_STATUS = 137


def check(armed: str | None) -> None:
    """Refuse an unknown point at start-up, so a typo cannot make a crash test pass vacuously."""
    if armed is not None and armed not in POINTS:
        raise ValueError(f"GENSERVICE_CRASH_AFTER must be one of {', '.join(POINTS)}, got {armed!r}")
    if armed is not None:
        log.warning("test-only crash point armed: the process exits after %s", armed)


def crash_point(armed: str | None, name: str) -> None:
    if armed == name:
        log.critical("crash point %s reached: exiting with status %d", name, EXIT_STATUS)
        os._exit(EXIT_STATUS)
