from __future__ import annotations

import sys
from pathlib import Path

import pytest

# helpers beside this file and the room layer's in-test ports (tests/rooms/roomfakes.py),
# importable under any --import-mode
_HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(_HERE.parent / "rooms"))
sys.path.insert(0, str(_HERE))

from sighelpers import Settings, Stack, make_settings  # noqa: E402


@pytest.fixture
async def stack():
    s = await Stack(make_settings()).start()
    yield s
    await s.stop()


@pytest.fixture
async def make_stack():
    stacks: list[Stack] = []

    async def make(settings: Settings | None = None, **server_kw) -> Stack:
        s = await Stack(settings or make_settings(), **server_kw).start()
        stacks.append(s)
        return s

    yield make
    for s in stacks:
        await s.stop()
