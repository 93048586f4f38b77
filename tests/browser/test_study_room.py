"""The study-room page in real headless Chromium against the real server (`studyrooms serve`).

One scenario, step by step (each wait bounded; on failure every page's console, state and stats and
the server log are printed):

1. Alice, Bob and Carol join one room through the page's form; each decodes the other two's
   camera video (framesDecoded grows) and receives their audio (bytesReceived grows); the third
   crosses the audio-only threshold (2 here) so all see the recommend-audio-only banner; a screenshot
   of Alice's page is saved to tests/browser/artifacts/three-person-room.png.
2. The lobby shows the room's live occupancy; Eve cannot join the full room (capacity 3): the
   page shows the room-full message.
3. Alice mutes: the others see her muted; she unmutes.
4. Bob shares his screen (getDisplayMedia, headless via --use-fake-ui-for-media-stream); Alice
   and Carol decode it in a screen tile; he stops and the tile goes.
5. Alice switches incoming video off with the banner's button (pause-consumer) and on again with
   the control bar's; video decodes again.
6. Carol leaves: her tiles disappear for Alice and Bob.
7. Dave joins late from the lobby's room list: he decodes Alice and Bob, they decode him.
8. Dave's server is lost (no reconnection): his page says so; the others see him leave.

A second test checks the message shown when camera and microphone are denied.
"""

from __future__ import annotations

import asyncio
import json
import time
from functools import partial

import pytest
from playwright.async_api import Browser, Page, async_playwright

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOM = "study-e2e"
VIEWPORT = {"width": 1280, "height": 800}
JOIN_TIMEOUT_S = 40.0
MEDIA_TIMEOUT_S = 60.0
EVENT_TIMEOUT_S = 20.0
MIN_FRAMES = 15  # frames decoded on top of the first sample
MIN_AUDIO_BYTES = 2000  # audio bytes received on top of the first sample


class Person:
    """One participant: a browser context (own storage) with one page of the app."""

    def __init__(self, name: str, page: Page):
        self.name = name
        self.page = page
        self.logs: list[str] = []
        self.participant_id: str | None = None
        page.on("console", lambda m: self.logs.append(f"[{time.strftime('%H:%M:%S')}] {m.type}: {m.text}"))
        page.on("pageerror", lambda e: self.logs.append(f"[{time.strftime('%H:%M:%S')}] pageerror: {e}"))

    @classmethod
    async def open(cls, browser: Browser, base_url: str, name: str) -> "Person":
        context = await browser.new_context(viewport=VIEWPORT)
        person = cls(name, await context.new_page())
        await person.page.goto(base_url + "/")
        await person.page.wait_for_function("() => !!window.studyrooms", timeout=15000)
        return person

    async def state(self) -> dict:
        return await self.page.evaluate("() => window.studyrooms.state")

    async def stats(self) -> list[dict]:
        return await self.page.evaluate("() => window.studyrooms.stats()")

    async def join(self, room: str = ROOM, via_room_list: bool = False) -> None:
        await self.page.fill("#display-name", self.name)
        if via_room_list:
            await self.page.click(f'.room-card[data-room-id="{room}"] button', timeout=EVENT_TIMEOUT_S * 1000)
        else:
            await self.page.fill("#room-id", room)
            await self.page.click("#join-button")

    async def wait_joined_and_publishing(self) -> None:
        state = await wait_for(
            self, "joined with mic and camera published",
            lambda s: s["joined"] and s["local"]["mic"] and s["local"]["camera"], JOIN_TIMEOUT_S)
        self.participant_id = state["participantId"]

    async def dump(self) -> str:
        parts = [f"===== {self.name} ({self.participant_id}) ====="]
        for what, js in (("state", "() => window.studyrooms.state"),
                         ("stats", "() => window.studyrooms.stats()"),
                         ("sendStats", "() => window.studyrooms.sendStats()"),
                         ("messages", "() => window.studyrooms.messages()")):
            try:
                value = await asyncio.wait_for(self.page.evaluate(js), 5)
                parts.append(f"{what}: {json.dumps(value, indent=None, default=str)[:6000]}")
            except Exception as err:  # noqa: BLE001 - diagnostics only
                parts.append(f"{what}: unavailable ({err!r})")
        parts.append("console (last 80):")
        parts.extend(self.logs[-80:])
        return "\n".join(parts)


async def wait_for(person: Person, what: str, predicate, timeout_s: float = EVENT_TIMEOUT_S) -> dict:
    """Polls the page's state until predicate(state) is truthy; returns that state."""
    deadline = time.monotonic() + timeout_s
    state: dict = {}
    while True:
        state = await person.state()
        if predicate(state):
            return state
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{person.name}: not {what} within {timeout_s:.0f} s; state={json.dumps(state)[:3000]}")
        await asyncio.sleep(0.25)


async def wait_receiving(
    person: Person, expected: list[tuple[str, str]], timeout_s: float = MEDIA_TIMEOUT_S
) -> dict:
    """Waits until, for each (participantId, source), a consumer exists and its media grows.

    source "camera"/"screen": framesDecoded grows by MIN_FRAMES; "mic": bytesReceived grows by
    MIN_AUDIO_BYTES. Returns the last stats by (participantId, source).
    """
    deadline = time.monotonic() + timeout_s
    first: dict[str, dict] = {}
    last: dict[tuple[str, str], dict] = {}
    while True:
        stats = await person.stats()
        by_key = {(s["participantId"], s["source"]): s for s in stats}
        done = True
        for key in expected:
            s = by_key.get(key)
            if s is None:
                done = False
                continue
            last[key] = s
            base = first.setdefault(s["consumerId"], s)
            if key[1] == "mic":
                done &= s["bytesReceived"] - base["bytesReceived"] >= MIN_AUDIO_BYTES
            else:
                done &= s["framesDecoded"] - base["framesDecoded"] >= MIN_FRAMES
        if done:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{person.name}: media not flowing within {timeout_s:.0f} s for {expected};\n"
                f"first={json.dumps(first)}\nnow={json.dumps(stats)}")
        await asyncio.sleep(0.5)


def camera_and_mic(*people: Person) -> list[tuple[str, str]]:
    return [(p.participant_id, src) for p in people for src in ("camera", "mic")]


async def tile_video_width(person: Person, participant_id: str, kind: str = "camera") -> int:
    return await person.page.evaluate(
        """([pid, kind]) => {
             const sel = `.tile[data-participant-id="${pid}"][data-kind="${kind}"] video`;
             const v = document.querySelector(sel);
             return v ? v.videoWidth : -1; }""",
        [participant_id, kind])


async def wait_tiles_gone(person: Person, participant_id: str, kind: str | None = None) -> None:
    sel = f'.tile[data-participant-id="{participant_id}"]' + (f'[data-kind="{kind}"]' if kind else "")
    def gone(state: dict) -> bool:
        return not any(t["participantId"] == participant_id and (kind is None or t["kind"] == kind)
                       for t in state["tiles"])

    await wait_for(person, f"rid of the tiles of {participant_id} ({kind or 'all'})", gone)
    await person.page.wait_for_selector(sel, state="detached", timeout=EVENT_TIMEOUT_S * 1000)


async def run_with_diagnostics(people: list[Person], server, body, artifacts_dir=None):
    try:
        await body()
    except BaseException:
        print("\n".join([await p.dump() for p in people]))
        if artifacts_dir is not None:
            for p in people:
                try:
                    shot = artifacts_dir / f"failure-{p.name.lower()}.png"
                    await p.page.screenshot(path=str(shot), full_page=True)
                except Exception as err:  # noqa: BLE001 - diagnostics only
                    print(f"no failure screenshot of {p.name}: {err!r}")
        print(f"===== server log (tail) =====\n{server.log_tail(120)}")
        raise


async def three_person_scenario(browser: Browser, server, artifacts_dir, people: list[Person], step) -> None:
    # --- 1. three people join; everyone decodes everyone --------------------------------
    alice, bob, carol = [await Person.open(browser, server.base_url, n) for n in ("Alice", "Bob", "Carol")]
    people.extend([alice, bob, carol])
    for p in (alice, bob, carol):
        await p.join()
        await p.wait_joined_and_publishing()
    trio = [alice, bob, carol]
    for p in trio:
        others = [o for o in trio if o is not p]
        await wait_for(p, "showing two remote tiles with video and audio",
                       lambda s: sum(1 for t in s["tiles"] if t["kind"] == "camera" and t["hasVideo"]
                                     and t["hasAudio"]) == 2, MEDIA_TIMEOUT_S)
        await wait_receiving(p, camera_and_mic(*others))
        for o in others:
            width = await tile_video_width(p, o.participant_id)
            assert width > 0, f"{p.name}: {o.name}'s tile shows no video"
        state = await p.state()
        names = sorted(t["displayName"] for t in state["tiles"])
        assert names == sorted(o.name for o in others), names
    for p in trio:  # camera published with three simulcast encodings and the server took them
        assert (await p.state())["local"]["camera"]["encodings"] == 3
        # 3 people > audio-only threshold 2 (conftest): the banner offers to switch incoming video off
        await p.page.locator("#banner").wait_for(state="visible", timeout=EVENT_TIMEOUT_S * 1000)
        assert "incoming video" in (await p.page.locator("#banner").inner_text()).lower()
    print("alice sends:", json.dumps(await alice.page.evaluate("() => window.studyrooms.sendStats()")))
    step("1. three people decode each other")
    shot = artifacts_dir / "three-person-room.png"
    await alice.page.screenshot(path=str(shot), full_page=True)
    assert (await alice.page.locator("#grid .tile").count()) == 3

    # --- 2. live occupancy in the lobby; the fourth is refused: room full ---------------
    dave = await Person.open(browser, server.base_url, "Dave")
    eve = await Person.open(browser, server.base_url, "Eve")
    people.extend([dave, eve])
    step("2-. two more pages open")
    count = dave.page.locator(f'.room-card[data-room-id="{ROOM}"] .room-card__count')
    await count.wait_for(timeout=EVENT_TIMEOUT_S * 1000)
    await dave.page.wait_for_function(
        """(room) => {
             const c = document.querySelector(`.room-card[data-room-id="${room}"] .room-card__count`);
           return c && c.textContent.trim().startsWith('3'); }""", arg=ROOM, timeout=EVENT_TIMEOUT_S * 1000)
    step("2a. lobby shows 3 people")
    await eve.join()
    full = eve.page.locator('#messages .message[data-code="room-full"]')
    await full.wait_for(state="visible", timeout=EVENT_TIMEOUT_S * 1000)
    assert "room-full" in (await full.inner_text())
    assert not (await eve.state())["joined"]
    assert await eve.page.locator("#lobby").is_visible()
    await eve.page.context.close()
    people.remove(eve)

    step("2b. room-full shown")
    # --- 3. mute / unmute -----------------------------------------------------------------
    await alice.page.click("#btn-mic")
    await wait_for(alice, "muted", lambda s: s["local"]["mic"]["paused"])
    for p in (bob, carol):
        await wait_for(p, "seeing Alice muted", lambda s: any(
            t["participantId"] == alice.participant_id and t["kind"] == "camera" and t["micMuted"]
            for t in s["tiles"]))
    await alice.page.click("#btn-mic")
    for p in (bob, carol):
        await wait_for(p, "seeing Alice unmuted", lambda s: any(
            t["participantId"] == alice.participant_id and t["kind"] == "camera" and not t["micMuted"]
            for t in s["tiles"]))

    step("3. mute/unmute")
    # --- 4. screen share and stop sharing ---------------------------------------------
    await bob.page.click("#btn-screen")
    await wait_for(bob, "sharing his screen", lambda s: s["local"]["screen"])
    for p in (alice, carol):
        await wait_for(p, "showing Bob's screen tile", lambda s: any(
            t["participantId"] == bob.participant_id and t["kind"] == "screen" for t in s["tiles"]),
            MEDIA_TIMEOUT_S)
        await wait_receiving(p, [(bob.participant_id, "screen")])
        assert await tile_video_width(p, bob.participant_id, "screen") > 0
    await alice.page.screenshot(path=str(artifacts_dir / "screen-share.png"), full_page=True)
    await bob.page.click("#btn-screen")
    await wait_for(bob, "not sharing", lambda s: not s["local"]["screen"])
    for p in (alice, carol):
        await wait_tiles_gone(p, bob.participant_id, "screen")
        assert any(t["participantId"] == bob.participant_id for t in (await p.state())["tiles"])

    step("4. screen share and stop")
    # --- 5. incoming video off and on (pause-consumer / resume-consumer) ------------------
    await alice.page.click("#banner-video-off")  # the recommend-audio-only banner's toggle
    await wait_for(alice, "with incoming video paused", lambda s: not s["incomingVideo"] and all(
        c["paused"] for c in s["consumers"] if c["kind"] == "video"))
    await alice.page.click("#btn-incoming-video")
    await wait_for(alice, "with incoming video resumed", lambda s: s["incomingVideo"] and all(
        not c["paused"] for c in s["consumers"] if c["kind"] == "video"))
    await wait_receiving(alice, [(bob.participant_id, "camera"), (carol.participant_id, "camera")])

    step("5. incoming video off/on")
    # --- 6. Carol leaves; her tiles go --------------------------------------------------
    await carol.page.click("#btn-leave")
    await carol.page.locator("#lobby").wait_for(state="visible", timeout=EVENT_TIMEOUT_S * 1000)
    assert not (await carol.state())["joined"]
    for p in (alice, bob):
        await wait_tiles_gone(p, carol.participant_id)
    await carol.page.context.close()
    people.remove(carol)

    step("6. Carol left")
    # --- 7. Dave joins late from the room list; everyone decodes everyone -------------------
    await dave.join(via_room_list=True)
    await dave.wait_joined_and_publishing()
    await wait_receiving(dave, camera_and_mic(alice, bob))
    for p in (alice, bob):
        await wait_receiving(p, [(dave.participant_id, "camera"), (dave.participant_id, "mic")])
    assert sorted(t["displayName"] for t in (await dave.state())["tiles"]) == ["Alice", "Bob"]

    step("7. late joiner")
    # --- 8. Dave's connection drops ------------------------------------------------------
    # (a server that stays lost: no reconnection; a short drop reconnects and heals by itself)
    await dave.page.evaluate(
        "() => { const io = window.studyrooms.client.signaling.socket.io; io.reconnection(false); io.engine.close(); }")
    lost = dave.page.locator('#messages .message[data-code="connection-lost"]')
    await lost.wait_for(state="visible", timeout=EVENT_TIMEOUT_S * 1000)
    assert await dave.page.locator("#lobby").is_visible()
    for p in (alice, bob):
        await wait_tiles_gone(p, dave.participant_id)

    step("8. connection lost")
    # Everyone leaves cleanly.
    for p in (alice, bob):
        await p.page.click("#btn-leave")
        await p.page.locator("#lobby").wait_for(state="visible", timeout=EVENT_TIMEOUT_S * 1000)


@pytest.mark.timeout(480)
async def test_three_people_share_a_room(server, chromium_path, chromium_args, artifacts_dir):
    people: list[Person] = []
    t0 = time.monotonic()

    def step(name: str) -> None:
        print(f"[{time.monotonic() - t0:6.1f} s] {name}: ok")

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium_path, headless=True, args=chromium_args)
        try:
            await run_with_diagnostics(
                people, server, partial(three_person_scenario, browser, server, artifacts_dir, people, step),
                artifacts_dir)
        finally:
            await browser.close()


@pytest.mark.timeout(180)
async def test_denied_camera_and_microphone_is_explained(server, chromium_path, chromium_args, artifacts_dir):
    """Without --use-fake-ui-for-media-stream headless Chromium denies getUserMedia (NotAllowedError)."""
    args = [a for a in chromium_args if a != "--use-fake-ui-for-media-stream"]
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium_path, headless=True, args=args)
        try:
            person = await Person.open(browser, server.base_url, "Grace")

            async def scenario():
                await person.join(room="denied-room")
                denied = person.page.locator('#messages .message[data-code="media-denied"]')
                await denied.wait_for(state="visible", timeout=JOIN_TIMEOUT_S * 1000)
                assert "denied" in (await denied.inner_text()).lower()
                state = await person.state()
                assert state["joined"] and state["local"]["mic"] is None and state["local"]["camera"] is None
                assert await person.page.locator("#room").is_visible()
                await person.page.click("#btn-leave")
                await person.page.locator("#lobby").wait_for(state="visible", timeout=EVENT_TIMEOUT_S * 1000)

            await run_with_diagnostics([person], server, scenario, artifacts_dir)
        finally:
            await browser.close()
