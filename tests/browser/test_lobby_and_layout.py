"""What a newcomer sees first, in real headless Chromium against `studyrooms serve`:

1. the lobby refuses a room id the server would refuse (``maths.101``), saying the rule in words;
2. a one-word name gets a one-letter avatar ("A", not "A(" from "Ann (you)");
3. a shared screen leaves the camera tiles above the fixed control bar (1280x800, no scrolling);
4. after a lost connection the lobby's room list keeps refreshing (a room opened later shows up);
5. the server's output (text format) has the room host's INFO lines with the room/participant ids.
"""

from __future__ import annotations

import asyncio

import time
import uuid

import pytest
from playwright.async_api import async_playwright

from browser.test_study_room import EVENT_TIMEOUT_S, Person, run_with_diagnostics, wait_for, wait_receiving

pytestmark = [pytest.mark.browser, pytest.mark.slow]


async def _layout(person: Person) -> dict:
    return await person.page.evaluate("""() => {
        const bar = document.getElementById('controls').getBoundingClientRect();
        const tiles = [...document.querySelectorAll('#grid .tile')].map((t) => {
          const r = t.getBoundingClientRect();
          return { kind: t.dataset.kind, self: t.dataset.self === 'true', top: r.top, bottom: r.bottom, height: r.height };
        });
        return { barTop: bar.top, scrollY: window.scrollY, tiles };
    }""")


@pytest.mark.timeout(240)
async def test_lobby_rules_avatars_screen_layout_and_room_list(server, chromium_path, chromium_args, artifacts_dir):
    room = f"layout-{uuid.uuid4().hex[:4]}"
    later = f"later-{uuid.uuid4().hex[:4]}"
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium_path, headless=True, args=chromium_args)
        people: list[Person] = []
        try:
            ann = await Person.open(browser, server.base_url, "Ann")
            ben = await Person.open(browser, server.base_url, "Ben")
            people.extend([ann, ben])

            async def scenario():
                # 1. the server's room-id rule, in words, before anything is sent
                await ann.page.fill("#display-name", "Ann")
                await ann.page.fill("#room-id", "maths.101")
                await ann.page.click("#join-button")
                message = await ann.page.evaluate("() => document.getElementById('room-id').validationMessage")
                assert "letters, digits, '-' or '_'" in message and "pattern" not in message.lower(), message
                state = await ann.state()
                assert not state["joined"] and not state["joining"]

                # 2. a one-word name: one letter on the avatar
                await ann.join(room)
                await ann.wait_joined_and_publishing()
                avatar = await ann.page.locator('.tile[data-self="true"][data-kind="camera"] .tile__avatar').text_content()
                assert avatar == "A", avatar
                await ben.join(room)
                await ben.wait_joined_and_publishing()

                # 3. Ben shares his screen: on Ann's page the cameras stay above the control bar
                await ben.page.click("#btn-screen")
                await wait_for(ben, "sharing his screen", lambda s: s["local"]["screen"])
                await wait_receiving(ann, [(ben.participant_id, "screen")])
                layout = await _layout(ann)
                await ann.page.screenshot(path=str(artifacts_dir / "screen-share-layout.png"))
                stage = [t for t in layout["tiles"] if t["kind"] == "screen" and not t["self"]]
                cameras = [t for t in layout["tiles"] if t["kind"] == "camera"]
                assert len(stage) == 1 and len(cameras) == 2, layout
                assert layout["scrollY"] == 0 and stage[0]["height"] >= 180, layout
                assert all(t["bottom"] <= layout["barTop"] for t in cameras), layout

                # 4. Ann's server is lost for good (no reconnection: a short drop would heal by itself);
                # the lobby's list shows a room opened afterwards
                await ann.page.evaluate(
                    "() => { const io = window.studyrooms.client.signaling.socket.io; io.reconnection(false);"
                    " io.engine.close(); }")
                lost = ann.page.locator('#messages .message[data-code="connection-lost"]')
                await lost.wait_for(state="visible", timeout=EVENT_TIMEOUT_S * 1000)
                await ben.page.click("#btn-leave")
                await ben.page.locator("#lobby").wait_for(state="visible", timeout=EVENT_TIMEOUT_S * 1000)
                t0 = time.monotonic()
                await ben.join(later)
                await ben.wait_joined_and_publishing()
                card = ann.page.locator(f'.room-card[data-room-id="{later}"]')
                await card.wait_for(state="visible", timeout=15000)
                print(f"room opened after the lost connection listed after {time.monotonic() - t0:.1f} s")

                # the server's own output (text format): the room host's INFO lines with the ids
                log = server.log_path.read_text(errors="replace")
                joined = [ln for ln in log.splitlines() if "(RoomHost pid=" in ln
                          and f"INFO studyrooms.room: room {room}: {ann.participant_id} joined" in ln]
                assert joined and joined[0].endswith(f"[room={room}]"), log[-3000:]
                # a lost connection is resumable: Ann is detached (media kept), then leaves when the
                # resume grace (rooms.resume_grace_s, 15 s by default) runs out
                assert f"{ann.participant_id} detached" in log, log[-3000:]
                def left_lines(text: str) -> list[str]:
                    return [ln for ln in text.splitlines() if f"{ann.participant_id} left (" in ln]

                deadline = time.monotonic() + 25
                while not left_lines(log) and time.monotonic() < deadline:
                    await asyncio.sleep(0.5)
                    log = server.log_path.read_text(errors="replace")
                assert left_lines(log), log[-3000:]
                assert left_lines(log)[0].endswith(f"[room={room} participant={ann.participant_id}]"), log[-3000:]

            await run_with_diagnostics(people, server, scenario, artifacts_dir)
        finally:
            await browser.close()
