"""shared/background.idle_child: work run in a child process at SCHED_IDLE."""
import os

import pytest

from services.store.train_dict import frame, unframe
from shared.background import ChildFailed, idle_child


async def test_the_child_runs_at_idle_priority_and_returns_its_output():
    # services.store.train_dict lowers itself first; an empty sample list trains nothing
    assert await idle_child("services.store.train_dict", frame([])) == b""
    out = await idle_child("tests.idle_policy", b"ping")
    assert out == f"{os.SCHED_IDLE} ping".encode()


async def test_a_failing_child_says_why():
    with pytest.raises(ChildFailed, match="(?s)exited 1:.*samples cut short"):
        await idle_child("services.store.train_dict", b"\x05\x00\x00\x00ab")


def test_samples_are_framed_and_unframed_whole():
    samples = [b"", b"a", b"\x00" * 70000]
    assert unframe(frame(samples)) == samples
    with pytest.raises(ValueError, match="cut short"):
        unframe(frame(samples)[:-1])
