"""A receiver behind a real constrained link (issue 10): headless Chromium with the real page, inside a
network namespace this test creates, reached over a veth pair whose host side is shaped with
``tc tbf``; nothing leaves the machine.

`studyrooms serve` (subprocess, plain environment) listens and announces on the veth's host-side
address. Three senders (Alice, Bob, Carol: the page's simulcast camera and mic) run in a Chromium on
the host; Dave's Chromium runs inside the namespace (``ip netns exec``) and pins Alice on stage.
Only Alice's mic is on. Once the open link carries Alice at spatial layer 1 or more, Dave's downlink
is shaped (600 then 150 kbit/s): Alice (on stage) keeps flowing at the best layer that fits, the
others are cut first and then paused, Dave's audio never stops; at 150 kbit/s Alice stays on spatial
layer 0 and keeps decoding for 6 s (issue 10: probe clusters going through the token bucket's saved
tokens had lifted the estimate above 324 kbit/s and her video to spatial layer 1, where it froze);
lifting the limit brings every video back within 20 s. Skipped (not failed) where network namespaces
or tbf cannot be used (not root, no iproute2).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
import time

import pytest
from playwright.async_api import async_playwright

from studyrooms.signaling.auth import issue_token

from .test_study_room import VIEWPORT, Person, run_with_diagnostics

pytestmark = [
    pytest.mark.browser, pytest.mark.slow,
    # runs wherever it can (root, iproute2's ip and tc, network namespaces permitted, the tbf qdisc);
    # skipped with the reason otherwise (the netns fixture)
]

ROOM = "bwe-netns"
NS = f"sr-bwe-{os.getpid() % 100000}"
VETH_HOST, VETH_NS = f"srh{os.getpid() % 100000}", f"srn{os.getpid() % 100000}"
HOST_IP, NS_IP = "10.211.37.1", "10.211.37.2"
SERVER_HOST = HOST_IP  # tests/browser/conftest.py's server fixture binds and announces here
SECRET = "netns-bandwidth-test-secret-0123456789abcdef"  # not loopback: the server wants a secret
SERVER_ENV = {"STUDYROOMS_LISTEN_IP": HOST_IP, "STUDYROOMS_ROOMS_CAPACITY": "6", "STUDYROOMS_AUTH_SECRET": SECRET}
CLIMB_BACK_S = 20.0


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=20)


@pytest.fixture(scope="module")
def netns():
    """The namespace + veth pair (host side HOST_IP, namespace side NS_IP); always removed."""
    if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("tc"):
        pytest.skip("needs root with ip and tc (iproute2) for a network namespace")
    made = sh("ip", "netns", "add", NS, check=False)
    if made.returncode != 0:
        pytest.skip(f"ip netns is not permitted here: {made.stderr.strip()}")
    try:
        for cmd in (("ip", "link", "add", VETH_HOST, "type", "veth", "peer", "name", VETH_NS),
                    ("ip", "link", "set", VETH_NS, "netns", NS),
                    ("ip", "addr", "add", f"{HOST_IP}/30", "dev", VETH_HOST),
                    ("ip", "link", "set", VETH_HOST, "up"),
                    ("ip", "netns", "exec", NS, "ip", "addr", "add", f"{NS_IP}/30", "dev", VETH_NS),
                    ("ip", "netns", "exec", NS, "ip", "link", "set", VETH_NS, "up"),
                    ("ip", "netns", "exec", NS, "ip", "link", "set", "lo", "up")):
            sh(*cmd)
        tbf = sh("tc", "qdisc", "add", "dev", VETH_HOST, "root", "tbf", "rate", "1mbit", "burst", "16kb",
                 "latency", "300ms", check=False)
        if tbf.returncode != 0:
            pytest.skip(f"tc cannot add a tbf qdisc here (sch_tbf): {tbf.stderr.strip()}")
        sh("tc", "qdisc", "del", "dev", VETH_HOST, "root", check=False)
        yield NS
    finally:
        sh("ip", "netns", "del", NS, check=False)  # takes the namespace's veth end (and its peer) along
        sh("ip", "link", "del", VETH_HOST, check=False)


async def open_invited(browser, base_url: str, name: str) -> Person:
    """The page opened from an invitation link (``?token=``), as users of a server with a secret do."""
    token = issue_token(SECRET, f"user-{name.lower()}", name, [ROOM], 600)
    context = await browser.new_context(viewport=VIEWPORT)
    person = Person(name, await context.new_page())
    await person.page.goto(f"{base_url}/?token={token}")
    await person.page.wait_for_function("() => !!window.studyrooms", timeout=15000)
    return person


def shape(rate_kbit: int | None) -> None:
    """Dave's downlink: the host side's egress (host -> namespace) through a token bucket."""
    sh("tc", "qdisc", "del", "dev", VETH_HOST, "root", check=False)
    if rate_kbit:
        sh("tc", "qdisc", "add", "dev", VETH_HOST, "root", "tbf", "rate", f"{rate_kbit}kbit",
           "burst", "16kb", "latency", "300ms")


async def allocation(person: Person) -> dict[str, dict]:
    """The server's view (get-stats over Socket.IO): participantId -> Dave's camera allocation."""
    stats = await person.page.evaluate("() => window.studyrooms.client.signaling.request('get-stats', {})")
    me = next(x for x in stats["participants"] if x["participantId"] == person.participant_id)
    owners = {s["consumerId"]: s["participantId"] for s in await person.stats() if s["kind"] == "video"}
    return {owners[a["consumerId"]]: a for a in me["videoAllocation"] if a["consumerId"] in owners}


async def audio_bytes(person: Person) -> int:
    return sum(s["bytesReceived"] for s in await person.stats() if s["kind"] == "audio")


async def frames(person: Person) -> dict[str, int]:
    return {s["participantId"]: s["framesDecoded"] for s in await person.stats() if s["source"] == "camera"}


@pytest.mark.timeout(300)
async def test_a_shaped_link_keeps_the_on_stage_video_and_pauses_the_others(netns, server, chromium_path,
                                                                            chromium_args, artifacts_dir):
    people: list[Person] = []
    wrapper_dir = tempfile.mkdtemp(prefix="sr-netns-")
    wrapper = os.path.join(wrapper_dir, "chromium-in-netns")
    with open(wrapper, "w") as fh:  # Playwright talks to the browser over inherited pipes: exec keeps them
        fh.write(f"#!/bin/sh\nexec ip netns exec {netns} {chromium_path} \"$@\"\n")
    os.chmod(wrapper, 0o755)
    audio_log: list[tuple[float, int]] = []
    alloc_log: list[tuple[float, dict]] = []

    async def scenario(host_browser, ns_browser):
        senders = [await open_invited(host_browser, server.base_url, n) for n in ("Alice", "Bob", "Carol")]
        people.extend(senders)
        dave = await open_invited(ns_browser, server.base_url, "Dave")
        people.append(dave)
        for p in (*senders, dave):
            await p.join(room=ROOM)
            await p.wait_joined_and_publishing()
        alice, bob, carol = senders
        for p in (bob, carol, dave):  # only Alice talks: her audio is what Dave must never lose
            await p.page.evaluate("() => window.studyrooms.toggleMic()")
        await dave.page.evaluate(f"() => window.studyrooms.layout.pin({json.dumps(alice.participant_id)})")
        others = (bob.participant_id, carol.participant_id)

        async def until(what, pred, timeout):
            end = time.monotonic() + timeout
            last = None
            while time.monotonic() < end:
                last = await allocation(dave)
                alloc_log.append((time.monotonic(), last))
                audio_log.append((time.monotonic(), await audio_bytes(dave)))
                if pred(last):
                    return last
                await asyncio.sleep(0.5)
            raise AssertionError(f"Dave: not {what} within {timeout:.0f} s: {json.dumps(last)}")

        def flowing(a, pid):
            return pid in a and not a[pid]["paused"]

        # open link: all three flow, Alice on stage at spatial layer 1 or more (so the steps below start
        # from a high estimate, as a real call's does)
        joined = time.monotonic()
        await until("receiving all three, Alice at spatial layer >= 1", lambda a: all(
            flowing(a, p.participant_id) for p in senders) and (a[alice.participant_id]["spatialLayer"] or 0) >= 1, 40)
        # (measured, issue 10: "leads first" must not hold cameras paused long at the start of a call)
        paused = [t for t, a in alloc_log if not all(flowing(a, o) for o in others)]
        first_all = next(t for t, a in alloc_log if all(flowing(a, p.participant_id) for p in senders))
        print(f"open link: all three flowing {first_all - joined:.1f} s and Alice at spatial >= 1 "
              f"{time.monotonic() - joined:.1f} s after joining; a camera paused in {len(paused)} of "
              f"{len(alloc_log)} samples")
        # 600 kbit/s: Alice keeps flowing at a layer at least as good as anyone's; the others are cut
        shape(600)
        def rung(a, pid):
            return (a[pid]["spatialLayer"], a[pid]["temporalLayer"])

        a = await until("cutting the others first", lambda a: flowing(a, alice.participant_id) and all(
            not flowing(a, o) or rung(a, o) <= rung(a, alice.participant_id) for o in others)
            and a[alice.participant_id]["group"] == "on-stage", 25)
        print("600 kbit/s:", json.dumps(a))
        # 150 kbit/s: Alice's audio and her lowest layer fit, nobody else's lowest layer does: the
        # others are paused, Alice still decodes, audio goes on. (At 100 kbit/s even Alice's lowest
        # layer, ~70 kbit/s measured, plus her audio overflow the link: she froze; round 3 run.)
        shape(150)
        a = await until("pausing the others", lambda a: flowing(a, alice.participant_id)
                        and not flowing(a, bob.participant_id) and not flowing(a, carol.participant_id), 30)
        print("150 kbit/s:", json.dumps(a))
        # Alice keeps decoding (>= 5 frames in each 3 s) on spatial layer 0, the only one that fits
        for _ in range(2):
            f0 = await frames(dave)
            spatial = []
            for _ in range(6):
                await asyncio.sleep(0.5)
                spatial.append((await allocation(dave))[alice.participant_id]["spatialLayer"])
            f1 = await frames(dave)
            assert f1[alice.participant_id] - f0[alice.participant_id] >= 5, (f0, f1, spatial)
            assert all(s == 0 for s in spatial), f"Alice above spatial layer 0 on a 150 kbit/s link: {spatial}"
        # the limit lifts: every video flows again within CLIMB_BACK_S
        shape(None)
        t0 = time.monotonic()
        a = await until("every video back", lambda a: all(flowing(a, p.participant_id) for p in senders),
                        CLIMB_BACK_S)
        print(f"limit lifted: all back after {time.monotonic() - t0:.1f} s:", json.dumps(a))
        # and Dave decodes all three again (a resumed video restarts from a keyframe)
        f0 = await frames(dave)
        f1 = f0
        while time.monotonic() - t0 < CLIMB_BACK_S + 5:
            f1 = await frames(dave)
            if all(f1.get(p.participant_id, 0) - f0.get(p.participant_id, 0) >= 5 for p in senders):
                break
            await asyncio.sleep(0.5)
        assert all(f1.get(p.participant_id, 0) - f0.get(p.participant_id, 0) >= 5 for p in senders), (f0, f1)
        print(f"all three decoding again {time.monotonic() - t0:.1f} s after the limit lifted")
        # audio never stopped: Dave's received audio bytes grew in every 3 s window
        stalls = [(t1 - t0_, b1 - b0) for (t0_, b0), (t1, b1) in zip(audio_log, audio_log[1:]) if b1 <= b0]
        longest = 0.0
        start = None
        for (t, b), (_, b_next) in zip(audio_log, audio_log[1:]):
            if b_next <= b:
                start = t if start is None else start
                longest = max(longest, t - start)
            else:
                start = None
        assert longest < 3.0, f"audio stalled for {longest:.1f} s ({len(stalls)} flat samples)"

    # not loopback, plain http: camera and mic need the origin treated as secure (as with a real
    # deployment's https)
    args = [*chromium_args, f"--unsafely-treat-insecure-origin-as-secure={server.base_url}"]
    try:
        async with async_playwright() as pw:
            host_browser = await pw.chromium.launch(executable_path=chromium_path, headless=True, args=args)
            ns_browser = await pw.chromium.launch(executable_path=wrapper, headless=True, args=args)
            try:
                await run_with_diagnostics(people, server, lambda: scenario(host_browser, ns_browser), artifacts_dir)
            finally:
                await ns_browser.close()
                await host_browser.close()
    finally:
        shape(None)
        shutil.rmtree(wrapper_dir, ignore_errors=True)
