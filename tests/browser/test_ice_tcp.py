"""ICE-TCP end to end: `studyrooms serve` with STUDYROOMS_MEDIA_ENABLE_TCP=true and
STUDYROOMS_MEDIA_ENABLE_UDP=false (the media workers offer only their passive TCP candidate, as a
client on a UDP-blocking network would find them), two Chromium pages decode each other's video and
getStats shows the selected pairs run over TCP to the worker's host candidate. No TURN involved."""

from __future__ import annotations

import json

import pytest
from playwright.async_api import async_playwright

from browser.test_study_room import JOIN_TIMEOUT_S, Person, run_with_diagnostics, wait_receiving

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def server_env() -> dict[str, str]:
    return {"STUDYROOMS_MEDIA_ENABLE_TCP": "true", "STUDYROOMS_MEDIA_ENABLE_UDP": "false"}


@pytest.mark.timeout(240)
async def test_pages_decode_each_other_over_ice_tcp(server, chromium_path, chromium_args):
    people: list[Person] = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium_path, headless=True, args=chromium_args)
        try:
            async def scenario():
                a, b = [await Person.open(browser, server.base_url, n) for n in ("Tcp-Ann", "Tcp-Ben")]
                people.extend([a, b])
                for p in (a, b):
                    await p.join(room="ice-tcp")
                    await p.wait_joined_and_publishing()
                await wait_receiving(a, [(b.participant_id, "camera"), (b.participant_id, "mic")], JOIN_TIMEOUT_S)
                await wait_receiving(b, [(a.participant_id, "camera"), (a.participant_id, "mic")], JOIN_TIMEOUT_S)
                for p in (a, b):
                    paths = await p.page.evaluate("() => window.studyrooms.icePaths()")
                    print(f"{p.name}: {json.dumps(paths)}")
                    for direction in ("send", "recv"):
                        path = paths[direction]
                        assert path["selected"] and path["protocol"] == "tcp", (p.name, direction, path)
                        # an active TCP candidate's port exists only once connected: Chrome calls it prflx
                        assert path["localType"] in ("host", "prflx") and path["remoteType"] == "host", (
                            p.name, direction, path)
                    state = await p.state()
                    assert state["transports"]["turn"] is False and state["transports"]["iceTransportPolicy"] == "all"

            await run_with_diagnostics(people, server, scenario)
        finally:
            await browser.close()
