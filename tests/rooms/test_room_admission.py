"""Admission control in the room: a worker measured over ``rooms.worker_cpu_limit`` takes nobody
more; the joiner goes to another worker, or is refused with resource-exhausted when none can take
it (the real-load test is tests/ray/test_admission.py)."""

from __future__ import annotations

import pytest

from roomfakes import FakeDirectory, RecordingNotifier, session
from studyrooms.clock import FakeClock
from studyrooms.config import Settings
from studyrooms.errors import ResourceExhaustedError
from studyrooms.ids import IdFactory
from studyrooms.rooms import RoomService


def _service(directory: FakeDirectory) -> RoomService:
    settings = Settings(rooms={"worker_cpu_limit": 0.5})
    return RoomService(settings, directory, RecordingNotifier(), FakeClock(), "h", id_factory=IdFactory("p"))


def _busy(worker, cpu: float) -> None:
    plain = worker._get_stats
    worker._get_stats = lambda data: {**plain(data), "loopCpu": cpu}


async def _join(svc, sid):
    return await svc.request(session(sid), "join-room", {"roomId": "r", "displayName": sid})


async def test_an_overloaded_worker_sends_the_joiner_to_another_worker():
    directory = FakeDirectory(2)
    svc = _service(directory)
    await _join(svc, "a")
    home = svc.rooms["r"].worker_id
    _busy(directory.workers[home], 0.7)
    await _join(svc, "b")
    room = svc.rooms["r"]
    assert len(room.routers) == 2 and room.participants[room.participant_by_sid("b").id].worker_id != home


async def test_a_join_no_worker_can_take_is_refused_and_the_others_stay():
    directory = FakeDirectory(1)
    svc = _service(directory)
    await _join(svc, "a")
    _busy(directory.workers["w0"], 0.6)
    with pytest.raises(ResourceExhaustedError, match="at capacity.*60%.*50%"):
        await _join(svc, "b")
    assert [p.sid for p in svc.rooms["r"].participants.values()] == ["a"]
    _busy(directory.workers["w0"], 0.3)  # the load went down: joins are taken again
    await _join(svc, "c")
    assert len(svc.rooms["r"].participants) == 2
