"""services/workforce.py: which processes count as live, and a deployment-wide cap shared out among them."""
from __future__ import annotations

from datetime import timedelta

import pytest

from database.models import WorkerHeartbeat
from services import workforce
from services.clock import utcnow


@pytest.mark.parametrize("total, live, expected", [
    (64, 4, 16), (64, 3, 21), (10, 4, 2), (3, 4, 1), (64, 0, 64), (64, 1, 64),
])
def test_the_shares_add_up_to_no_more_than_the_total(total, live, expected):
    assert workforce.share(total, live) == expected
    assert workforce.share(total, live) * max(1, live) <= max(total, live)  # at least one each


def test_a_heartbeat_counts_while_it_is_within_three_polls_or_thirty_seconds(db):
    now = utcnow()
    with db.transaction() as session:
        for worker_id, seconds_ago in (("fresh", 1), ("busy", 29), ("slow", 80), ("dead", 200)):
            session.add(WorkerHeartbeat(worker_id=worker_id, hostname="h", pid=1,
                                        last_beat_at=now - timedelta(seconds=seconds_ago)))
    with db.session() as session:
        assert workforce.live_workers(session, now, poll_interval=2) == 2     # within 30 s
        assert workforce.live_workers(session, now, poll_interval=30) == 3    # within 90 s
