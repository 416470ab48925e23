"""services/gcpause.py: the collector is off while any pause is open and back on after the last one."""
from __future__ import annotations

import gc
import threading

import pytest

from services import gcpause


@pytest.fixture(autouse=True)
def collector_on():
    gc.enable()
    yield
    gc.enable()


def test_overlapping_pauses_resume_only_after_the_last_one():
    inside, leave = threading.Event(), threading.Event()

    def other():
        with gcpause.paused():
            inside.set()
            leave.wait(10)

    thread = threading.Thread(target=other)
    with gcpause.paused():
        assert not gc.isenabled()
        thread.start()
        assert inside.wait(10)
    assert not gc.isenabled()  # the other thread is still inside its pause
    leave.set()
    thread.join(10)
    assert gc.isenabled()


def test_an_error_inside_still_resumes_the_collector():
    with pytest.raises(ValueError):
        with gcpause.paused():
            raise ValueError("refused")
    assert gc.isenabled()


def test_a_collector_switched_off_before_stays_off():
    gc.disable()
    with gcpause.paused():
        pass
    assert not gc.isenabled()
