"""A restarted actor brings itself back (actors/supervision.py ``call_self_later``): its
constructor's call to its own start method is retried until it went through, so a call that fails
(the actor still counted as restarting: ``ActorUnavailableError``, or the method itself failing
for a moment) never leaves it half started. Real Ray, a real SIGKILL of the actor's process."""

from __future__ import annotations

import os
import signal
import time

import pytest
import ray

pytestmark = pytest.mark.ray


@ray.remote(max_restarts=1, num_cpus=0)
class Restartable:
    """Started by hand the first time; after a restart its constructor queues ``start``, which
    fails on its first two calls (as a bind or a lookup failing briefly would)."""

    def __init__(self) -> None:
        from actors.supervision import call_self_later, was_restarted

        self.started = False
        self.calls = 0
        self.restarted = was_restarted()
        if self.restarted:
            call_self_later("start", window_s=20.0)

    def start(self) -> int:
        self.calls += 1
        if self.restarted and self.calls < 3:
            raise RuntimeError(f"not yet (call {self.calls})")
        self.started = True
        return self.calls

    def state(self) -> dict:
        return {"started": self.started, "calls": self.calls, "restarted": self.restarted, "pid": os.getpid()}


def test_a_restarted_actor_calls_its_own_start_until_it_succeeds(ray_session):
    actor = Restartable.remote()
    assert ray.get(actor.start.remote(), timeout=30) == 1
    first = ray.get(actor.state.remote(), timeout=30)
    assert first["started"] and not first["restarted"]
    os.kill(first["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 30
    state: dict = {}
    while time.monotonic() < deadline:
        try:
            state = ray.get(actor.state.remote(), timeout=5)
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
            time.sleep(0.2)
            continue
        if state["started"]:
            break
        time.sleep(0.2)
    # nobody called start on the new process: it called itself, failed twice, and went on trying
    assert state.get("restarted") and state["pid"] != first["pid"], state
    assert state["started"] and state["calls"] == 3, state
    ray.kill(actor)
