"""Last-N in real headless Chromium against `studyrooms serve`: six pages in one room; one page asks
for two videos (``?lastN=2``, sent as set-receive-constraints by web/src/layout.js). That page decodes
exactly two videos (framesDecoded grows for two consumers only: the server pauses the others),
shows the other three people as avatar tiles, and clicking a third person's tile pins them: their
video is on the stage, decoding, within 2 s (the server resumes it from a keyframe; no signaling
round trip beyond the constraints).

The five other pages ask for no video (``?lastN=0``) and mute their microphones so the machine is
not busy decoding and the speaker order (join order when nobody speaks) is deterministic.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from playwright.async_api import async_playwright

from browser.test_study_room import JOIN_TIMEOUT_S, VIEWPORT, Person, run_with_diagnostics, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOM = "big-room"
SERVER_ENV = {"STUDYROOMS_ROOMS_CAPACITY": "10", "STUDYROOMS_ROOMS_AUDIO_ONLY_THRESHOLD": "40"}
PIN_DEADLINE_S = 2.0


async def open_page(browser, base_url: str, name: str, last_n: int) -> Person:
    context = await browser.new_context(viewport=VIEWPORT)
    person = Person(name, await context.new_page())
    await person.page.goto(f"{base_url}/?lastN={last_n}")
    await person.page.wait_for_function("() => !!window.studyrooms", timeout=15000)
    return person


async def decoding(person: Person, window_s: float = 2.0) -> dict[str, int]:
    """participantId -> frames decoded during ``window_s`` for each camera consumer."""
    first = {s["consumerId"]: s for s in await person.stats() if s["kind"] == "video"}
    await asyncio.sleep(window_s)
    out = {}
    for s in await person.stats():
        if s["kind"] == "video" and s["consumerId"] in first:
            out[s["participantId"]] = s["framesDecoded"] - first[s["consumerId"]]["framesDecoded"]
    return out


async def places(person: Person) -> dict[str, str]:
    return (await person.page.evaluate("() => window.studyrooms.layout.state"))["places"]


async def scenario(browser, server, people: list[Person]) -> None:
    viewer = await open_page(browser, server.base_url, "Viewer", 2)
    people.append(viewer)
    others = [await open_page(browser, server.base_url, f"P{i}", 0) for i in range(1, 6)]
    people.extend(others)
    for p in [viewer, *others]:
        await p.join(room=ROOM)
        await p.wait_joined_and_publishing()
    for p in others:
        await p.page.evaluate("() => window.studyrooms.toggleMic()")  # muted: nobody speaks
    ids = [p.participant_id for p in others]
    # the viewer consumes all five cameras, but the server forwards two: the first two to join
    await wait_for(viewer, "consuming five cameras",
                   lambda s: sum(1 for c in s["consumers"] if c["kind"] == "video") == 5, JOIN_TIMEOUT_S)
    layout = await viewer.page.wait_for_function(
        "() => { const s = window.studyrooms.layout.state; "
        "return s.forwarding && s.forwarding.video.length === 2 && s.constraints && s.constraints.lastN === 2 && s; }",
        timeout=JOIN_TIMEOUT_S * 1000)
    forwarded = (await layout.json_value())["forwarding"]["video"]
    assert forwarded == ids[:2], forwarded
    deadline = time.monotonic() + 30
    while True:  # decoding settles once the two forwarded videos started from their keyframes
        frames = await decoding(viewer)
        if ({pid for pid, n in frames.items() if n > 0} == set(forwarded)
                and all(frames.get(pid, 0) >= 5 for pid in forwarded)) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert len(frames) == 5 and {pid for pid, n in frames.items() if n > 0} == set(forwarded), frames
    assert all(n >= 5 for pid, n in frames.items() if pid in forwarded), frames
    where = await places(viewer)
    for pid in ids:
        assert where[f"p:{pid}"] == ("grid" if pid in forwarded else "avatar"), where
    avatars = viewer.page.locator('.tile[data-place="avatar"]')
    assert await avatars.count() == 3
    assert await avatars.first.locator(".tile__avatar").is_visible()
    assert not await avatars.first.locator("video").is_visible()

    # pin a third person: click their avatar tile; on stage and decoding within 2 s
    third = ids[3]
    before = {s["participantId"]: s["framesDecoded"] for s in await viewer.stats() if s["kind"] == "video"}
    t0 = time.monotonic()
    await viewer.page.click(f'.tile[data-participant-id="{third}"][data-kind="camera"]')
    while True:
        stats = {s["participantId"]: s["framesDecoded"] for s in await viewer.stats() if s["kind"] == "video"}
        on_stage = (await places(viewer)).get(f"p:{third}") == "stage"
        if on_stage and stats.get(third, 0) > before.get(third, 0):
            break
        if time.monotonic() - t0 > 10:
            raise AssertionError(f"pinned {third} not on stage and decoding: places={await places(viewer)} "
                                 f"stats={json.dumps(stats)}")
        await asyncio.sleep(0.05)
    elapsed = time.monotonic() - t0
    print(f"pinned participant on stage and decoding after {elapsed:.2f} s")
    assert elapsed <= PIN_DEADLINE_S, f"pinning took {elapsed:.2f} s"
    state = await viewer.page.evaluate("() => window.studyrooms.layout.state")
    assert state["forwarding"]["onStage"] == [third] and state["forwarding"]["video"][0] == third
    assert len(state["forwarding"]["video"]) == 2  # still two videos: the pin took a slot
    for p in people:
        await p.page.click("#btn-leave")


@pytest.mark.timeout(300)
async def test_last_n_page_decodes_two_shows_avatars_and_pins_on_stage(server, chromium_path, chromium_args,
                                                                       artifacts_dir):
    people: list[Person] = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium_path, headless=True, args=chromium_args)
        try:
            await run_with_diagnostics(people, server, lambda: scenario(browser, server, people), artifacts_dir)
        finally:
            await browser.close()
