"""The page heals by itself: three people in a call in real headless Chromium (`studyrooms serve`),
the media worker hosting their room is killed (SIGKILL on its process, pid from /api/stats); every
page decodes the others' camera video again within 8 s, nobody clicks anything, no connection-lost
message appears, and each keeps its own mic and camera published. Then the signaling actor is
killed: every page reconnects and resumes its session (same participant, same consumers) while
its video never stops. The figures are printed (``-s``) and quoted in the README.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import pytest
from playwright.async_api import async_playwright

from browser.conftest import http_json
from browser.test_study_room import Person, run_with_diagnostics, wait_receiving

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOM = "heal-page"
# The target: every page decodes both others again within 8 s of the kill. (A consumer whose
# first keyframe request went nowhere used to wait for good with the bandwidth allocator: it now asks
# again while it waits, studyrooms/sfu/consumer.py; this was the >8 s page of an earlier CI run.)
HEAL_TARGET_S = 8.0
HEAL_TIMEOUT_S = HEAL_TARGET_S


DIAGNOSE_AFTER_S = 6.0


async def diagnose(person: Person) -> str:
    """What the server decided for this page's consumers and what the page receives (slow heals)."""
    js = """async () => {
      const c = window.studyrooms.client;
      let server = null;
      try { server = await c.signaling.request('get-stats', {}); } catch (e) { server = String(e); }
      const mine = server && server.participants ? server.participants.find((p) => p.participantId === c.participantId) : null;
      return {page: (await c.stats()).map((s) => [s.kind, s.participantId.slice(0, 6), s.consumerId.slice(0, 6),
                                                    s.packetsReceived, s.framesDecoded, s.frameWidth]),
              forwarding: c.forwarding, reconnecting: c.reconnecting,
              recv: c.recvTransport && c.recvTransport.connectionState, send: c.sendTransport && c.sendTransport.connectionState,
              allocation: mine ? mine.videoAllocation : server, available: mine ? mine.availableOutgoingBitrate : null};
    }"""
    try:
        found = await asyncio.wait_for(person.page.evaluate(js), 5)
        return json.dumps(found, default=str)[:4000] + "\nconsole:\n" + "\n".join(person.logs[-25:])
    except Exception as err:  # noqa: BLE001 - diagnostics only
        return f"unavailable ({err!r})"


def signaling_pid(server) -> int:
    """The pid of this server's signaling actor (a process of the server's own session)."""
    import psutil

    for child in psutil.Process(server.proc.pid).children(recursive=True):
        try:
            if child.cmdline() and child.cmdline()[0].startswith("ray::Signaling"):
                return child.pid
        except psutil.Error:
            continue
    raise AssertionError("no ray::Signaling process under the server")


async def signaling_killed(server, people: list[Person]) -> None:
    """The signaling actor is killed: every page reconnects and resumes its session (same
    participant, same consumers: nothing rebuilt) and no page's video stops meanwhile."""
    ids = {p.name: (await p.state())["participantId"] for p in people}
    start = {p.name: await frames_by_sender(p) for p in people}
    last = {p.name: {k: (v[1], time.monotonic()) for k, v in start[p.name].items()} for p in people}
    gaps: dict[str, float] = {}
    saw_reconnecting: set[str] = set()
    os.kill(signaling_pid(server), signal.SIGKILL)
    t_kill = time.monotonic()
    resumed: dict[str, float] = {}
    while time.monotonic() - t_kill < 20 and (len(resumed) < len(people) or time.monotonic() - t_kill < 6):
        for p in people:
            state = await p.state()
            if state.get("reconnecting"):
                saw_reconnecting.add(p.name)
            elif p.name in saw_reconnecting and p.name not in resumed and state["joined"]:
                resumed[p.name] = time.monotonic() - t_kill
            now = time.monotonic()
            for sender, (consumer_id, frames) in (await frames_by_sender(p)).items():
                key = f"{p.name}<-{sender[:6]}"
                count, at = last[p.name].get(sender, (0, t_kill))
                if frames > count:
                    last[p.name][sender] = (frames, now)
                else:
                    gaps[key] = max(gaps.get(key, 0.0), now - at)
        await asyncio.sleep(0.2)
    print("\npage: signaling killed: resumed after " + ", ".join(f"{k} {v:.2f} s" for k, v in sorted(resumed.items()))
          + f"; largest decoded-frame gap {max(gaps.values(), default=0.0):.2f} s")
    if set(resumed) != {p.name for p in people}:
        raise AssertionError(f"not every page resumed within 20 s of the signaling kill: resumed {resumed}, "
                             f"saw reconnecting {sorted(saw_reconnecting)}\n{await why_not_resumed(server, people)}")
    for p in people:
        state = await p.state()
        assert state["participantId"] == ids[p.name] and not state["reconnecting"], state
        now = await frames_by_sender(p)
        assert {k: v[0] for k, v in now.items()} == {k: v[0] for k, v in start[p.name].items()}, p.name  # same consumers
        codes = [m["code"] for m in await p.page.evaluate("() => window.studyrooms.messages()")]
        assert "connection-lost" not in codes, codes
    # video never stopped for a re-join (0.2 s sampling): rebuilding transports after the reconnect
    # takes the resume time (2.4-4.9 s) plus ICE/DTLS and a keyframe; a resumed page keeps decoding.
    # Gaps up to 1.97 s were seen on a loaded clean-clone CI run (three pages and an actor restart
    # on 2 cores), so the bound is 3 s
    assert max(gaps.values(), default=0.0) < 3.0, gaps


async def why_not_resumed(server, people: list[Person]) -> str:
    """For a failed resume: each page's socket state and the server's log lines about the restart."""
    js = """() => {
      const c = window.studyrooms.client, s = c.signaling && c.signaling.socket, m = s && s.io;
      return {connected: !!(s && s.connected), active: !!(s && s.active), reconnecting: c.reconnecting,
              attempts: m && m.backoff ? m.backoff.attempts : null, joined: c.joined};
    }"""
    lines = []
    for p in people:
        try:
            lines.append(f"{p.name}: {json.dumps(await asyncio.wait_for(p.page.evaluate(js), 5))} "
                         f"console: {p.logs[-6:]}")
        except Exception as err:  # noqa: BLE001 - diagnostics only
            lines.append(f"{p.name}: unavailable ({err!r})")
    try:
        status, _ = http_json(server.base_url + "/healthz")
        lines.append(f"/healthz: {status}")
    except Exception as err:  # noqa: BLE001
        lines.append(f"/healthz: {err!r}")
    log = [line for line in server.log_tail(400).splitlines()
           if "ignaling" in line or "resumed" in line or "detached" in line or "Error" in line]
    return "\n".join(lines + ["server log (signaling, resume):"] + log[-30:])


async def frames_by_sender(person: Person) -> dict[str, tuple[str, int]]:
    """participantId -> (consumerId, framesDecoded) of their camera at this page."""
    return {s["participantId"]: (s["consumerId"], s["framesDecoded"]) for s in await person.stats()
            if s["source"] == "camera"}


@pytest.mark.timeout(240)
async def test_pages_heal_after_their_media_worker_is_killed(server, chromium_path, chromium_args, artifacts_dir):
    people: list[Person] = []

    async def scenario() -> None:
        for name in ("Ann", "Ben", "Cy"):
            person = await Person.open(browser, server.base_url, name)
            people.append(person)
            await person.join(ROOM)
        for person in people:
            await person.wait_joined_and_publishing()
        for person in people:
            await wait_receiving(person, [(o.participant_id, "camera") for o in people if o is not person])
        status, stats = http_json(server.base_url + "/api/stats")
        room = next(r for r in stats["rooms"] if r["roomId"] == ROOM)
        worker_id = room["workers"][0]["workerId"]
        pid = next(w["pid"] for w in stats["workers"] if w["workerId"] == worker_id)
        before = {p.name: await frames_by_sender(p) for p in people}
        os.kill(pid, signal.SIGKILL)
        t_kill = time.monotonic()
        healed: dict[str, float] = {}
        seen_reconnecting = set()
        diagnosed: set[str] = set()
        while len(healed) < len(people) and time.monotonic() - t_kill < HEAL_TIMEOUT_S:
            for p in people:
                if p.name in healed:
                    continue
                if time.monotonic() - t_kill > DIAGNOSE_AFTER_S and p.name not in diagnosed:
                    diagnosed.add(p.name)
                    print(f"\n{p.name} not healed {DIAGNOSE_AFTER_S} s after the kill:\n{await diagnose(p)}")
                state = await p.state()
                if state.get("reconnecting"):
                    seen_reconnecting.add(p.name)
                now = await frames_by_sender(p)
                others = [o.participant_id for o in people if o is not p]
                # a NEW consumer of each other person, decoding
                if all(pid_ in now and now[pid_][0] != before[p.name].get(pid_, ("", 0))[0] and now[pid_][1] > 0
                       for pid_ in others):
                    healed[p.name] = time.monotonic() - t_kill
            await asyncio.sleep(0.1)
        print("\npage: kill -> first decoded frame of both others: "
              + ", ".join(f"{k} {v:.2f} s" for k, v in sorted(healed.items())))
        assert len(healed) == len(people), f"not healed within {HEAL_TIMEOUT_S} s: only {healed}"
        for p in people:
            state = await p.state()
            assert state["joined"] and state["local"]["mic"] and state["local"]["camera"], state["local"]
            assert not state["reconnecting"]
            codes = [m["code"] for m in await p.page.evaluate("() => window.studyrooms.messages()")]
            assert "connection-lost" not in codes, codes
            await wait_receiving(p, [(o.participant_id, "camera") for o in people if o is not p], timeout_s=20)
        await signaling_killed(server, people)
        for p in people:
            await p.page.click("#btn-leave")

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium_path, headless=True, args=chromium_args)
        try:
            await run_with_diagnostics(people, server, scenario, artifacts_dir)
        finally:
            await browser.close()
