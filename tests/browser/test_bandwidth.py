"""Downlink bandwidth in real headless Chromium against `studyrooms serve` (issue 10).

A 1:1 call on loopback with the page's simulcast camera: the receiver gets the top layer the sender
sends (its frame width) within TOP_LAYER_TIMEOUT_S of its first decoded frame and stays there; a
late joiner gets it too. transport-cc is negotiated both ways (the server's estimate and probing
decide the layer; the browser's own send-side estimate runs on the server's feedback).
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from playwright.async_api import async_playwright

from .conftest import http_json
from .test_study_room import Person, run_with_diagnostics

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOM = "bwe-1to1"
TOP_LAYER_TIMEOUT_S = 15.0
STAY_S = 6.0
FIRST_FRAME_TIMEOUT_S = 40.0


async def camera_stats(viewer: Person, sender: Person) -> dict | None:
    for s in await viewer.stats():
        if s["participantId"] == sender.participant_id and s["source"] == "camera":
            return s
    return None


async def top_width(sender: Person) -> int:
    sent = await sender.page.evaluate("() => window.studyrooms.sendStats()")
    return max((s.get("frameWidth") or 0) for s in sent if s["kind"] == "video")


async def wait_top_layer(viewer: Person, sender: Person) -> tuple[float, list[int]]:
    """Seconds from the first decoded frame to the sender's top width; the widths seen meanwhile."""
    deadline = time.monotonic() + FIRST_FRAME_TIMEOUT_S
    while True:
        s = await camera_stats(viewer, sender)
        if s and s["framesDecoded"] > 0:
            break
        assert time.monotonic() < deadline, f"{viewer.name}: no frame of {sender.name}'s camera"
        await asyncio.sleep(0.25)
    t0 = time.monotonic()
    widths: list[int] = []
    while True:
        s = await camera_stats(viewer, sender)
        top = await top_width(sender)
        widths.append(s["frameWidth"])
        if top >= 640 and s["frameWidth"] == top:
            return time.monotonic() - t0, widths
        assert time.monotonic() - t0 < TOP_LAYER_TIMEOUT_S, (
            f"{viewer.name}: {sender.name}'s camera not at the top layer ({top} px wide) within "
            f"{TOP_LAYER_TIMEOUT_S:.0f} s of the first frame; widths seen {widths}")
        await asyncio.sleep(0.5)


async def assert_stays(viewer: Person, sender: Person, seconds: float) -> None:
    samples = []
    frames0 = (await camera_stats(viewer, sender))["framesDecoded"]
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        s = await camera_stats(viewer, sender)
        samples.append((s["frameWidth"], await top_width(sender)))
        await asyncio.sleep(0.5)
    at_top = sum(1 for w, top in samples if w == top)
    assert at_top >= 0.85 * len(samples) and samples[-1][0] == samples[-1][1], (
        f"{viewer.name}: {sender.name}'s camera did not stay at the top layer: {samples}")
    frames = (await camera_stats(viewer, sender))["framesDecoded"] - frames0
    assert frames >= 8 * seconds, f"{viewer.name}: only {frames} frames in {seconds} s at the top layer"


@pytest.mark.timeout(240)
async def test_one_to_one_reaches_the_top_layer_and_a_late_joiner_too(server, chromium_path, chromium_args,
                                                                       artifacts_dir):
    people: list[Person] = []
    t0 = time.monotonic()

    async def scenario(browser):
        alice, bob = [await Person.open(browser, server.base_url, n) for n in ("Alice", "Bob")]
        people.extend([alice, bob])
        for p in (alice, bob):
            await p.join(room=ROOM)
            await p.wait_joined_and_publishing()
        took, widths = await wait_top_layer(bob, alice)
        print(f"[{time.monotonic() - t0:5.1f} s] Bob: Alice's top layer after {took:.1f} s ({widths})")
        took2, _ = await wait_top_layer(alice, bob)
        print(f"[{time.monotonic() - t0:5.1f} s] Alice: Bob's top layer after {took2:.1f} s")
        await assert_stays(bob, alice, STAY_S)
        carol = await Person.open(browser, server.base_url, "Carol")
        people.append(carol)
        await carol.join(room=ROOM)
        await carol.wait_joined_and_publishing()
        took3, widths3 = await wait_top_layer(carol, alice)
        print(f"[{time.monotonic() - t0:5.1f} s] Carol (late): Alice's top layer after {took3:.1f} s ({widths3})")
        await assert_stays(carol, alice, 3.0)
        # the server's view, over Socket.IO get-stats: an estimate for Carol's downlink and her layers
        stats = await carol.page.evaluate("() => window.studyrooms.client.signaling.request('get-stats', {})")
        me = next(x for x in stats["participants"] if x["participantId"] == carol.participant_id)
        print("carol get-stats:", json.dumps(me)[:1500])
        assert me["availableOutgoingBitrate"] and me["availableOutgoingBitrate"] > 500_000
        cams = [c for c in me["videoAllocation"] if c["spatialLayer"] == 2]
        assert len(cams) >= 1, me["videoAllocation"]
        # the browsers' media left through the compiled core (the default), not the Python path
        _, api = http_json(server.base_url + "/api/stats")
        workers = [w for w in api["workers"] if w.get("rtpPacketsSent")]
        print("workers:", [(w["forwardingPath"], w["rtpPacketsSent"], w["rtpPacketsSentByCore"]) for w in workers])
        assert workers and all(w["forwardingPath"] == "compiled" for w in workers)
        assert sum(w["rtpPacketsSentByCore"] for w in workers) > 0.9 * sum(w["rtpPacketsSent"] for w in workers)
        # and came in through the compiled receive step (recvmmsg, SRTP unprotect, in-order RTP in C;
        # the browsers send transport-wide seqs, which the core records for the Python feedback)
        print("received:", [(w["rtpPacketsReceived"], w["rtpPacketsReceivedByCore"]) for w in workers])
        assert sum(w["rtpPacketsReceivedByCore"] for w in workers) > 0.5 * sum(w["rtpPacketsReceived"] for w in workers)

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium_path, headless=True, args=chromium_args)
        try:
            await run_with_diagnostics(people, server, lambda: scenario(browser), artifacts_dir)
        finally:
            await browser.close()
