from __future__ import annotations

import sys
from pathlib import Path

import pytest

# the in-test ports live beside this file (importable under any --import-mode)
sys.path.insert(0, str(Path(__file__).resolve().parent))

from roomfakes import FakeDirectory, RecordingNotifier
from studyrooms.clock import FakeClock
from studyrooms.config import LimitSettings, RoomSettings, Settings
from studyrooms.ids import IdFactory
from studyrooms.rooms import RoomService


def make_settings(**rooms_and_limits) -> Settings:
    room_fields = {k: v for k, v in rooms_and_limits.items() if k in RoomSettings.model_fields}
    limit_fields = {k: v for k, v in rooms_and_limits.items() if k in LimitSettings.model_fields}
    return Settings(rooms=RoomSettings(**room_fields), limits=LimitSettings(**limit_fields))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def directory() -> FakeDirectory:
    return FakeDirectory(2)


@pytest.fixture
def notifier() -> RecordingNotifier:
    return RecordingNotifier()


@pytest.fixture
def make_service(clock, directory, notifier):
    services = []

    def make(**overrides) -> RoomService:
        svc = RoomService(make_settings(**overrides), directory, notifier, clock, "host-1", id_factory=IdFactory("p"))
        services.append(svc)
        return svc

    yield make


@pytest.fixture
def service(make_service) -> RoomService:
    return make_service()
